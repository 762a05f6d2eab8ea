"""The DICOMweb side of ``dicomnet serve``: the HTTP socket, the application on the archive the
DICOM side serves, and the metadata fragments computed as instances arrive.

Rules: one process serves DICOM and DICOMweb on one event loop, one storage folder and one index;
the storage service's ``IndexWriter`` is the web application's too (STOW rows go through it,
searches flush it first), and every instance stored by C-STORE has its metadata fragment
computed as it arrives, by a child process at the lowest CPU priority (``MetadataProcess``:
pydicom in a thread would hold the GIL the event loop needs). The socket is bound before
``--workers`` forks, so every process accepts HTTP from it as it does DICOM. The default port
(8042) is a convenience: when it is taken, DICOMweb is off with a warning and DICOM is served;
a port that was asked for (``--http-port``, ``[web] port``) and cannot be bound is an error.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from dicomnet.archive.index import SQLiteIndex
    from dicomnet.archive.metadata import MetadataProcess, MetadataStore
    from dicomnet.web import WebConfig, WebServer

log = logging.getLogger("dicomnet.cli")

__all__ = ["WebSide", "check_web_table", "listen_web", "open_web", "web_config"]


def check_web_table(name: str, raw: Any) -> dict[str, Any]:
    """The ``[web]`` table of the config file, checked by ``WebConfig.from_mapping`` (without
    the ``web`` extra it is kept as it is and refused when DICOMweb starts)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name} must be a table ([web]), not {raw!r}")
    table = {str(k).replace("-", "_"): v for k, v in raw.items()}
    try:
        from dicomnet.web.config import WebConfig
    except ImportError:
        return table
    WebConfig.from_mapping(table)  # ValueError names the wrong key
    return table


def web_config(
    table: Mapping[str, Any],
    *,
    host: str,
    http_port: int | None,
    viewer: str | None,
    viewer_dir: Path | None,
    fsync: bool,
) -> WebConfig:
    """The DICOMweb settings: the command line over the ``[web]`` table over the defaults; the
    web host is the DICOM host unless the table names one."""
    from dicomnet.web.config import WebConfig

    values = dict(table)
    values.setdefault("host", host)
    if http_port is not None:
        values["port"] = http_port
    if viewer is not None:
        values["viewer"] = viewer
    if viewer_dir is not None:
        values["viewer_dir"] = str(viewer_dir)
    values.setdefault("fsync", fsync)
    return WebConfig.from_mapping(values)


def listen_web(config: WebConfig, *, asked: bool) -> socket.socket | None:
    """The bound HTTP socket (before any worker forks), or None when the default port is taken
    (a warning); click.UsageError when a port that was asked for cannot be bound."""
    try:
        return socket.create_server((config.host, config.port), backlog=256)
    except OSError as exc:
        if asked:
            raise click.UsageError(
                f"cannot listen for DICOMweb on {config.host}:{config.port}: {exc}"
            ) from None
        log.warning(
            "DICOMweb is off: cannot listen on %s:%d (%s); choose a port with --http-port, "
            "or --no-web",
            config.host,
            config.port,
            exc.strerror or exc,
        )
        return None


def open_web(serve: Any) -> tuple[WebConfig | None, socket.socket | None]:
    """The DICOMweb settings and bound socket of a ``ServeConfig``, or (None, None) when
    DICOMweb is off (--no-web; --no-index, as it serves the index; the default port taken)."""
    asked = serve.http_port is not None or "port" in serve.web
    if serve.no_web:
        return None, None
    if serve.no_index:
        if asked or serve.viewer or serve.viewer_dir:
            raise click.UsageError("DICOMweb serves the index: --no-index leaves it off")
        log.info("DICOMweb is off: it serves the index, and --no-index has none")
        return None, None
    try:
        config = web_config(
            serve.web,
            host=serve.host,
            http_port=serve.http_port,
            viewer=serve.viewer,
            viewer_dir=serve.viewer_dir,
            fsync=not serve.no_fsync,
        )
    except ImportError as exc:
        if asked:
            raise click.UsageError(f"DICOMweb needs the web extra ({exc})") from None
        log.warning("DICOMweb is off: the web extra is not installed (%s)", exc)
        return None, None
    if config.viewer_dir is not None:
        from dicomnet.web.viewer import check_viewer_dir

        check_viewer_dir(config.viewer_dir)  # ValueError: a usage error before listening
    return config, listen_web(config, asked=asked)


class WebSide:
    """This process's DICOMweb server over ``index`` (its metadata cache, its fragment writer,
    the application): ``on_stored`` for the storage service, ``await start(...)``,
    ``await close()``, then ``close_files()`` before the index is closed."""

    def __init__(self, config: WebConfig, index: SQLiteIndex) -> None:
        from dicomnet.archive.metadata import MetadataProcess, MetadataStore

        self.config = config
        self.index = index
        self.store: MetadataStore = MetadataStore(index.path)
        self.fragments: MetadataProcess = MetadataProcess(index.path)
        self.server: WebServer | None = None

    def on_stored(self, request: Any, path: Path) -> None:
        """``StorageService.on_stored``: the instance's fragment, computed by the child."""
        self.fragments.add(request.sop_instance_uid, path)

    async def start(
        self,
        sock: socket.socket,
        storage: Path,
        *,
        writer: Any,
        layout: str,
        shutdown_timeout: float,
    ) -> None:
        from dicomnet.web import WebServer, create_app

        app = create_app(self.config, storage, self.index, store=self.store, writer=writer,
                         layout=layout)  # fmt: skip
        self.server = WebServer(app, sock=sock, shutdown_timeout=shutdown_timeout)
        await self.server.start()

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else self.config.port

    def announce(self) -> None:
        """One line on stderr: where the page, DICOMweb and the viewer are."""
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        base = self.config.public_url or f"http://{shown}:{self.port}"
        viewer = f", OHIF at {base}/viewer/" if self.config.viewer_dir else ""
        click.echo(
            f"dicomnet serve: the page at {base}/, DICOMweb at {base}/dicom-web{viewer}",
            err=True,
        )

    async def close(self) -> None:
        """Stop accepting, let running requests finish (up to the shutdown timeout)."""
        if self.server is not None:
            await self.server.close()

    def close_files(self) -> None:
        """Write the queued fragments and close the cache (before the index is closed)."""
        self.fragments.close()
        self.store.close()
