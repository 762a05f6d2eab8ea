"""``dicomnet serve``: a storage and query/retrieve node (DCMTK's storescp and dcmqrscp in one),
in three steps: parse the options, merge them over a TOML file into a ``ServeConfig``, run it.

Rules: every setting is a field of ``ServeConfig`` with its default; its command-line option and
its key in the file carry the field's name (``-`` or ``_`` alike), the command line wins over
the file, and an unknown key in the file is an error. A new setting (TLS, DICOMweb, worklist)
is a field, an option, and a parser in the field's metadata when its type has none below. The
work is the library's: ``ArchiveService``/``StorageService`` under a ``DicomServer``,
``dicomnet.workers`` for ``--workers``, ``dicomnet.sinks.remove_temp_files`` for what a crash
left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sqlite3
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dicomnet.archive.storage import DEFAULT_LAYOUT
from dicomnet.cli.common import CONTEXT_SETTINGS, run, setup_logging
from dicomnet.cli.security import (
    FILE_TABLES,
    SecurityConfig,
    audit_application,
    security_options,
    server_security,
    tls_socket_for_workers,
)
from dicomnet.cli.serve_web import WebSide, check_web_table, open_web
from dicomnet.sinks import remove_temp_files
from dicomnet.workers import fork_workers, stop_workers

if TYPE_CHECKING:
    from dicomnet.archive.index import SQLiteIndex
    from dicomnet.server import DicomServer
    from dicomnet.services.storage import StorageService

log = logging.getLogger("dicomnet.cli")


# --- the configuration ----------------------------------------------------------------------------


def _number(kind: type[int] | type[float]) -> Callable[[str, Any], Any]:
    def parse(name: str, raw: Any) -> int | float:
        try:
            if isinstance(raw, bool):  # TOML true is no number, although Python's bool is one
                raise TypeError
            return kind(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, not {raw!r}") from None

    return parse


def _strings(name: str, raw: Any) -> tuple[str, ...]:
    return (raw,) if isinstance(raw, str) else tuple(str(item) for item in raw)


def parse_peers(name: str, value: Any) -> dict[str, tuple[str, int]]:
    """C-MOVE destinations from ``AE=HOST:PORT`` strings, or a mapping of AE to ``HOST:PORT``
    (a TOML ``[peers]`` table); ValueError says which entry is wrong."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        items = [(str(ae), str(address)) for ae, address in value.items()]
    else:
        items = []
        for entry in value:
            ae, eq, address = str(entry).partition("=")
            if not eq:
                raise ValueError(f"peer {entry!r} is not AE=HOST:PORT")
            items.append((ae, address))
    peers: dict[str, tuple[str, int]] = {}
    for ae, address in items:
        ae = ae.strip()
        host, colon, port = address.strip().rpartition(":")
        if not ae or len(ae) > 16 or not colon or not host or not port.isdigit():
            raise ValueError(f"peer {ae}={address} is not AE=HOST:PORT (AE title of 1-16 chars)")
        if not 0 < int(port) < 65536:
            raise ValueError(f"peer {ae}={address}: port out of range")
        peers[ae] = (host.strip("[]"), int(port))
    return peers


def parse_store_as(name: str, raw: Any) -> str:
    """``--store-as``: a lossless transfer syntax this installation can write (a short name
    such as ``jpeg-ls-lossless`` or a UID), as its UID; "" keeps what arrives as it arrived."""
    from dicomnet.errors import TranscodeError
    from dicomnet.pixels import ALIASES, as_target, can_encode

    text = str(raw).strip()
    if not text or text.lower() in ("as-received", "none"):
        return ""
    try:
        target = as_target(text)
    except (TranscodeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None
    lossless = [n for n, t in ALIASES.items() if not t.lossy and not t.native]
    if target.lossy:
        raise ValueError(
            f"{name}: {target} is lossy; an archive stores losslessly: one of {', '.join(lossless)}"
        )
    if not can_encode(target):
        from dicomnet.pixels import capability

        raise ValueError(f"{name}: {capability(target.transfer_syntax).why_not(encode=True)}")
    return target.transfer_syntax


#: How a value from the command line or the file becomes a field's value, by the field's type;
#: a field of another type names its parser in its metadata (``metadata={"parse": ...}``).
_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "str": lambda _name, raw: str(raw),
    "bool": lambda _name, raw: bool(raw),
    "int": _number(int),
    "float": _number(float),
    "Path": lambda _name, raw: Path(raw),
}
#: Other names a key of the file may have.
_ALIASES = {"peer": "peers"}


@dataclass(frozen=True, kw_only=True)
class ServeConfig(SecurityConfig):
    """Everything ``dicomnet serve`` runs with; each field is the option of the same name (the
    security settings: ``cli/security.py``)."""

    host: str = "127.0.0.1"
    port: int = 11112
    aet: str = "DICOMNET"
    strict_aet: bool = False
    storage: Path = Path("dicom-store")
    layout: str = DEFAULT_LAYOUT
    allow_ae: tuple[str, ...] = field(default=(), metadata={"parse": _strings})
    no_fsync: bool = False
    max_associations: int = 64
    peers: Mapping[str, tuple[str, int]] = field(
        default_factory=dict, metadata={"parse": parse_peers}
    )
    no_index: bool = False
    no_workflow: bool = False
    workers: int = 1
    async_ops: int = 8
    shutdown_timeout: float = 10.0
    # DICOMweb beside DICOM (cli/serve_web.py); ``web`` is the file's [web] table only.
    http_port: int | None = field(default=None, metadata={"parse": _number(int)})
    no_web: bool = False
    viewer: str | None = field(default=None, metadata={"parse": _PARSERS["str"]})
    viewer_dir: Path | None = field(default=None, metadata={"parse": _PARSERS["Path"]})
    web: Mapping[str, Any] = field(default_factory=dict, metadata={"parse": check_web_table})
    store_as: str = field(default="", metadata={"parse": parse_store_as})

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        if not 0 <= self.async_ops <= 0xFFFF:  # PS3.7 D.3.3.3: a 16-bit count, 0 = unlimited
            raise ValueError(f"async-ops must be 0-65535, not {self.async_ops}")

    @classmethod
    def merge(cls, options: Mapping[str, Any], file: Mapping[str, Any]) -> ServeConfig:
        """The options given on the command line (None or ``()`` when not given) over the keys
        of a config file (``read_config_file``) over the defaults. ValueError or TypeError
        names a wrong value."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = options.get(f.name)
            if raw is None or raw == ():
                if f.name not in file:
                    continue
                raw = file[f.name]
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            parse = f.metadata.get("parse") or _PARSERS[kind]
            values[f.name] = parse(f.name.replace("_", "-"), raw)
        return cls(**values)


def read_config_file(path: str | None) -> dict[str, Any]:
    """The ``[serve]`` table of a TOML file (or its top level) with a top-level ``[peers]``
    table, keys as the field names; an unknown key is an error, not silently ignored."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--config") from None
    table = data.get("serve", data)
    if not isinstance(table, dict):
        raise click.BadParameter(f"{path}: [serve] is not a table", param_hint="--config")
    for name in (
        "peers",
        "web",
        *FILE_TABLES,
    ):  # top-level [peers], [web], [users]... beside [serve]
        if table is not data and name in data:
            table = {**table, name: data[name]}
    cfg = {str(k).replace("-", "_"): v for k, v in table.items()}
    cfg = {_ALIASES.get(k, k): v for k, v in cfg.items()}
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise click.BadParameter(
            f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            param_hint="--config",
        )
    return cfg


# --- the command ----------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--host", default=None, help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port.  [default: 11112]")
@click.option(
    "--aet",
    default=None,
    help="Our AE title; other called AE titles are accepted "
    "unless --strict-aet.  [default: DICOMNET]",
)
@click.option(
    "--strict-aet", is_flag=True, default=None, help="Reject called AE titles other than --aet."
)
@click.option("--storage", default=None, help="Folder to store into.  [default: ./dicom-store]")
@click.option(
    "--layout",
    default=None,
    help="Path of an instance under the folder, from attributes that are UIDs.  "
    "[default: {StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm]",
)
@click.option(
    "--allow-ae",
    multiple=True,
    help="Calling AE titles allowed (repeatable); "
    "others are rejected with 'calling AE title not recognized'.",
)
@click.option(
    "--no-fsync",
    is_flag=True,
    default=None,
    help="Do not fsync each file before answering success (faster, less durable).",
)
@click.option(
    "--max-associations", default=None, type=int, help="Associations at once.  [default: 64]"
)
@click.option(
    "--async-ops",
    default=None,
    type=click.IntRange(0, 65535),
    help="Requests of one association performed at once, for a peer that proposes an "
    "asynchronous operations window (like `dicomnet store --async-ops`); 0 = as many as it "
    "proposes.  [default: 8]",
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="AE=HOST:PORT",
    help="A C-MOVE destination (repeatable); in the config file a [peers] table "
    '(AE = "HOST:PORT") or a list of AE=HOST:PORT.',
)
@click.option(
    "--no-index",
    is_flag=True,
    default=None,
    help="Storage only: no index (STORAGE/.dicomnet-index.sqlite), no C-FIND/C-MOVE/C-GET.",
)
@click.option(
    "--no-workflow",
    is_flag=True,
    default=None,
    help="No Modality Worklist, MPPS and Storage Commitment (on by default with the index; "
    "a commitment report for a requester that has hung up goes to its --peer address).",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 64),
    help="Processes accepting associations from one listening socket (like storescp --fork, "
    "but pre-started); --max-associations applies per process. Use the number of cores for "
    "many concurrent associations.  [default: 1]",
)
@click.option(
    "--shutdown-timeout",
    default=None,
    type=float,
    help="On SIGINT/SIGTERM, seconds running associations get to finish before they are "
    "aborted (a second signal aborts at once).  [default: 10]",
)
@click.option(
    "--http-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port of DICOMweb (/dicom-web), WADO-URI (/wado) and the browser page (/), on the DICOM "
    "host; the [web] table of --config sets the rest (host, public-url, cors-origins, "
    "limits). If the default port is taken, DICOMweb is off with a warning.  [default: 8042]",
)
@click.option("--no-web", is_flag=True, default=None, help="DICOM only: no HTTP server.")
@click.option(
    "--viewer",
    default=None,
    type=click.Choice(["ohif", "none"]),
    help="Serve a prebuilt web viewer at /viewer (OHIF, fetched by `make ohif`).",
)
@click.option(
    "--viewer-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="The prebuilt OHIF's folder (its index.html, app.bundle...).  [default: ohif/dist]",
)
@click.option(
    "--store-as",
    default=None,
    metavar="SYNTAX",
    help="Store images in this lossless transfer syntax (jpeg-ls-lossless, jpeg2000-lossless, "
    "rle, deflated, explicit-le, ... or a UID), converted off the event loop before success is "
    "answered; lossy-compressed images, data sets without pixels and images the codec cannot "
    "take are kept as they arrived. The index records the stored syntax.  "
    "[default: as received]",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="TOML file with any of these options (a [serve] table or top level; "
    "command-line options win).",
)
@security_options
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.option("-v", "--verbose", count=True, help="Debug logging (-v), with PDU dumps.")
def serve(config_path: str | None, quiet: bool, verbose: int, **options: Any) -> None:
    """Run a storage node (like DCMTK's storescp): Verification and Storage SCP for every
    storage SOP class and every transfer syntax pydicom knows.

    Each instance is received into a temporary file and renamed to
    STORAGE/<StudyUID>/<SeriesUID>/<SOPUID>.dcm only when complete; a log line per association
    and per instance. SIGINT/SIGTERM stop it cleanly: running associations finish (or are
    aborted after --shutdown-timeout) and no partial file is left. `dicomnet serve` alone
    listens on 127.0.0.1:11112 as DICOMNET and stores into ./dicom-store.

    It is also a query/retrieve node: every instance is indexed in
    STORAGE/.dicomnet-index.sqlite (repaired against the files on a start after an unclean
    stop), and C-FIND, C-MOVE (to the --peer destinations) and C-GET are answered in the
    Patient Root and Study Root models. --no-index makes it a storage node only.

    And a DICOMweb server on the same archive (http://127.0.0.1:8042): QIDO-RS, WADO-RS and
    STOW-RS at /dicom-web, WADO-URI at /wado, a browser page at /, OHIF at /viewer with
    --viewer ohif. --no-web (or --no-index) turns it off.

    And it serves a modality's workflow: Modality Worklist C-FIND (items added with `dicomnet
    worklist add`), MPPS N-CREATE/N-SET (`dicomnet mpps list`) and Storage Commitment, whose
    report goes back on the requester's association or, once that has ended, to the --peer
    address of its AE title, retried until delivered (also after a restart). --no-workflow
    turns them off.
    """
    setup_logging(verbose, quiet)
    try:
        config = ServeConfig.merge(options, read_config_file(config_path))
    except (TypeError, ValueError) as exc:
        raise click.UsageError(f"bad option value: {exc}") from None
    sys.exit(run_server(config))


# --- running it -----------------------------------------------------------------------------------


def run_server(config: ServeConfig) -> int:
    """Serve ``config`` until SIGINT/SIGTERM, in ``config.workers`` processes; returns the exit
    code (click.UsageError when the storage folder, its index or the port cannot be used)."""
    from dicomnet.services.storage import mark_clean

    with _usage_errors(config.storage):
        # Before any worker exists: no process of ours can own a leftover yet, and the
        # locks keep the temporary files of other live servers on this storage safe.
        remove_temp_files(config.storage / ".incoming")
        secure = server_security(config, aet=config.aet, storage=config.storage)
        listening = _listen_for_workers(config) if config.workers > 1 else None
        web_config, http = open_web(config)  # bound here, shared by the workers
        if config.workers > 1:
            secure["tls_sock"] = tls_socket_for_workers(config)
    children = fork_workers(config.workers - 1)
    web: WebSide | None = None
    with _usage_errors(config.storage):
        index, factory = _service_factory(config, repair=config.workers == 1)
        if http is not None and web_config is not None and index is not None:
            web = WebSide(web_config, index)
            factory.on_stored = staticmethod(web.on_stored)
    stopped_cleanly = False  # marks the index clean at the end (no repair on the next start)
    try:
        stopped_cleanly = run(_serve(config, factory, listening, children, web, http, secure))
    except OSError as exc:
        click.echo(f"error: cannot listen on {config.host}:{config.port}: {exc}", err=True)
        return 2
    finally:
        if factory.index_writer is not None and not factory.index_writer.close():
            stopped_cleanly = False  # rows of the last instances are missing: repair next time
        if web is not None:
            web.close_files()
        if index is not None:
            if stopped_cleanly and children is not None:
                mark_clean(index)
            index.close()
    return 0


@contextlib.contextmanager
def _usage_errors(storage: Path) -> Iterator[None]:
    """Turn the errors of a configuration that cannot be used into click.UsageError (exit 2)."""
    from dicomnet.services.storage import INDEX_NAME

    try:
        yield
    except (TypeError, ValueError) as exc:
        raise click.UsageError(f"bad option value: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise click.UsageError(
            f"the index {storage / INDEX_NAME} is not usable ({exc}); the stored files are "
            f"untouched: move the index away and rebuild it with `dicomnet index {storage}`, "
            "or start with --no-index"
        ) from None
    except OSError as exc:
        raise click.UsageError(f"cannot use storage folder {storage}: {exc}") from None


def _listen_for_workers(config: ServeConfig) -> socket.socket:
    """Repair the index once and open the socket every process accepts from."""
    from dicomnet.services.storage import open_index

    if not config.no_index:
        open_index(config.storage).close()
    try:
        return socket.create_server((config.host, config.port), backlog=256)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {config.host}:{config.port}: {exc}") from None


def _service_factory(
    config: ServeConfig, *, repair: bool
) -> tuple[SQLiteIndex | None, type[StorageService]]:
    """This process's index (None with --no-index) and the service class it serves."""
    from dicomnet.services.qr import ArchiveService
    from dicomnet.services.storage import StorageService, open_index
    from dicomnet.services.workflow import WorkflowService

    index = None if config.no_index else open_index(config.storage, repair=repair)
    service = StorageService if index is None else ArchiveService
    if index is not None and not config.no_workflow:
        service = WorkflowService
    factory = service.factory(
        config.storage,
        layout=config.layout,
        ae_title=config.aet if config.strict_aet else None,
        allowed_calling_aes=config.allow_ae,
        fsync=not config.no_fsync,
        max_operations_performed=config.async_ops,
        index=index,
        peers=config.peers,
        aet=config.aet,
        store_as=config.store_as or None,
    )
    return index, factory


async def _serve(
    config: ServeConfig,
    factory: type[StorageService],
    listening: socket.socket | None,
    children: list[int] | None,
    web: WebSide | None = None,
    http: socket.socket | None = None,
    secure: Mapping[str, Any] | None = None,
) -> bool:
    """Serve until a signal, then stop: running associations get ``shutdown_timeout`` seconds
    (a second signal aborts them at once). True when every worker stopped cleanly."""
    from dicomnet.server import DicomServer, ServerLimits
    from dicomnet.services.workflow import start_workflow, stop_workflow

    limits = ServerLimits(max_associations=config.max_associations)
    secure = secure or {}  # TLS and security (cli/security.py)
    server = DicomServer(factory, config.host, config.port, limits=limits, sock=listening, **secure)
    await server.start()
    if web is not None and http is not None:
        await web.start(http, config.storage, writer=factory.index_writer, layout=config.layout,
                        shutdown_timeout=config.shutdown_timeout)  # fmt: skip
    audit_application(secure.get("security"), started=True)
    if config.store_as:
        from dicomnet.pixels.pool import default_pool

        default_pool().warm()  # the codec workers, before the first instance arrives
    # Commitment reports that could not be delivered: retried by the first process only.
    start_workflow(factory, retries=children is not None)
    stop = _on_signals()
    _announce(config, server, factory, is_worker=children is None)
    if web is not None and children is not None:
        web.announce()
    await stop.wait()
    web_closing = asyncio.ensure_future(web.close()) if web is not None else None
    log.info(
        "stopping: %d running association(s) get %g s to finish (signal again to abort)",
        server.active,
        config.shutdown_timeout,
    )
    now = _on_signals()
    closing = asyncio.ensure_future(server.close(abort_after=config.shutdown_timeout))
    second = asyncio.ensure_future(now.wait())
    await asyncio.wait({closing, second}, return_when=asyncio.FIRST_COMPLETED)
    if not closing.done():
        log.warning("second signal: aborting %d running association(s)", server.active)
        await server.close(abort_after=0)
    await closing
    second.cancel()
    if web_closing is not None:
        await web_closing
    await stop_workflow(factory)
    clean = True
    if children is not None:  # the parent: stop the workers, then clean up after all of them
        if children:
            clean = await asyncio.to_thread(stop_workers, children, config.shutdown_timeout + 5)
        try:
            remove_temp_files(config.storage / ".incoming")
        except OSError as exc:
            log.warning("temporary files left in %s: %s", config.storage / ".incoming", exc)
    log.info("stopped after %d association(s)", server.associations_served)
    audit_application(secure.get("security"), started=False)
    return clean


def _on_signals() -> asyncio.Event:
    """An event set by the next SIGINT or SIGTERM (replacing the handlers set before)."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


def _announce(
    config: ServeConfig, server: DicomServer, factory: type[StorageService], *, is_worker: bool
) -> None:
    allowed = config.allow_ae
    log.info(
        "AE %s on %s:%d, storing into %s%s; asynchronous operations window up to %s",
        config.aet,
        config.host,
        server.port,
        config.storage.resolve(),
        f", calling AE titles allowed: {', '.join(allowed)}" if allowed else "",
        config.async_ops or "unlimited",
    )
    if factory.index is not None:
        log.info(
            "query/retrieve on; C-MOVE destinations: %s",
            ", ".join(f"{ae}={h}:{p}" for ae, (h, p) in config.peers.items()) or "none",
        )
    if getattr(factory, "commitments", None) is not None:
        log.info("Modality Worklist, MPPS and Storage Commitment on")
    if not is_worker:
        tls = "" if server.ssl is None else " (TLS)" if server.tls_port is None else ""
        tls += f" and TLS on {server.tls_port}" if server.tls_port is not None else ""
        click.echo(
            f"dicomnet serve: listening on {config.host}:{server.port}{tls} as {config.aet}, "
            f"storing into {config.storage}"
            + (f" with {config.workers} processes" if config.workers > 1 else "")
            + " (Ctrl-C to stop)",
            err=True,
        )
