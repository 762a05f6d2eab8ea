"""What every ``dicomnet`` command shares: click's context settings, logging set-up, running a
coroutine on the best event loop, the exit codes of client commands, and finding the DICOM
files among the paths a sending command is given.

Rules: this module imports no other command module (each command module imports it), so the
commands never import each other.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from dicomnet.dataset import FileInfo, NotDicomError, read_file_info
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


def iter_paths(paths: Sequence[str], recursive: bool) -> Iterator[Path]:
    """The files named by ``paths``: files as given, a folder's files (sorted; with
    ``recursive`` those of its sub-folders too)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            for child in sorted(walker):
                if child.is_file():
                    yield child
        else:
            yield path


def scan_files(
    paths: Sequence[str], recursive: bool
) -> tuple[list[FileInfo], list[tuple[Path, str]]]:
    """The DICOM files among ``paths`` (their meta information only) and the skipped ones."""
    files: list[FileInfo] = []
    skipped: list[tuple[Path, str]] = []
    for path in iter_paths(paths, recursive):
        try:
            files.append(read_file_info(path))
        except NotDicomError as exc:
            skipped.append((path, str(exc)))
        except OSError as exc:
            skipped.append((path, f"{path}: {exc.strerror or exc}"))
        except Exception as exc:  # pydicom's own errors on broken meta information
            skipped.append((path, f"{path}: not readable as DICOM ({exc})"))
    return files, skipped
