"""What every ``dicomnet`` command shares: click's context settings, logging set-up, running a
coroutine on the best event loop, and the exit codes of client commands.

Rules: this module imports no other command module (each command module imports it), so the
commands never import each other.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from dicomnet.errors import AssociationRejected, DicomNetError

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def setup_logging(verbose: int, quiet: bool) -> None:
    """WARNING when ``quiet``, else INFO, DEBUG from one ``-v`` on; records go to stderr."""
    level = logging.WARNING if quiet else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on uvloop when it is installed (the ``fast`` extra), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def client_main(go: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a client command's coroutine factory and return its exit code; an association that
    cannot be opened or fails prints one line and gives 2, Ctrl-C gives 130."""
    try:
        return int(run(go()))
    except AssociationRejected as exc:
        click.echo(f"error: association {exc}", err=True)
        return 2
    except DicomNetError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
