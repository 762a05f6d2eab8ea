"""The ``dicomnet`` command: echo, store, serve (find, move, get come with query/retrieve).

Rules: commands only parse options, call the library and present results; anything a library
user would also need lives in the library. Exit code 0 only when everything succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from dicomnet.client import CStoreRequest, DicomClient, Request
from dicomnet.dataset import FileInfo, NotDicomError, read_file_info
from dicomnet.dimse.status import StatusCategory, category, describe
from dicomnet.errors import AssociationRejected, DicomNetError, NegotiationError
from dicomnet.negotiation import ProposedContext
from dicomnet.uids import uid_name

log = logging.getLogger("dicomnet.cli")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed (the ``fast`` extra), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="dicomnet")
def main() -> None:
    """DICOM networking: verify, send, receive, query and retrieve instances (DCMTK's echoscu,
    storescu, storescp, findscu, movescu and getscu in one command).

    `dicomnet CMD --help` documents each command.
    """


# --- echo -----------------------------------------------------------------------------------------


@main.command()
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("--aet", default="DICOMNET", show_default=True, help="Our (calling) AE title.")
@click.option("--aec", default="ANY-SCP", show_default=True, help="The peer's (called) AE title.")
@click.option(
    "--count",
    "-c",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="C-ECHOs to send in one association.",
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("-v", "--verbose", count=True, help="Log the association (-vv: and every PDU).")
def echo(
    host: str, port: int, aet: str, aec: str, count: int, timeout: float, verbose: int
) -> None:
    """Verify a peer with C-ECHO (like DCMTK's echoscu); prints each status and round-trip time.

    Exit code: 0 when every C-ECHO succeeded, 1 when one answered another status, 2 when the
    peer could not be reached or rejected the association.
    """
    _setup_logging(verbose, quiet=verbose == 0)

    async def go() -> int:
        failures = 0
        async with DicomClient(
            host,
            port,
            aet,
            aec,
            acse_timeout=timeout,
            dimse_timeout=timeout,
            connect_timeout=timeout,
        ) as client:
            times: list[float] = []
            for i in range(count):
                start = time.perf_counter()
                status = await client.c_echo()
                elapsed = time.perf_counter() - start
                times.append(elapsed)
                if status != 0:
                    failures += 1
                if count <= 10 or i == count - 1 or status != 0:
                    click.echo(
                        f"C-ECHO {i + 1}/{count} to {aec}@{host}:{port}: {describe(status)} "
                        f"in {elapsed * 1000:.2f} ms"
                    )
            if count > 1:
                total = sum(times)
                click.echo(
                    f"{count} echoes in {total:.3f} s: {count / total:.0f}/s, "
                    f"mean {total / count * 1000:.3f} ms, {failures} failed"
                )
        return 1 if failures else 0

    sys.exit(_client_main(go))


def _client_main(go: Any) -> int:
    """Run a client coroutine factory; association-level errors print one line and give 2."""
    try:
        return int(_run(go()))
    except AssociationRejected as exc:
        click.echo(f"error: association {exc}", err=True)
        return 2
    except DicomNetError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130


# --- store ----------------------------------------------------------------------------------------


def _iter_paths(paths: Sequence[str], recursive: bool) -> Iterator[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            for child in sorted(walker):
                if child.is_file():
                    yield child
        else:
            yield path


def _scan(paths: Sequence[str], recursive: bool) -> tuple[list[FileInfo], list[tuple[Path, str]]]:
    """The DICOM files among ``paths`` (their meta information only) and the skipped ones."""
    files: list[FileInfo] = []
    skipped: list[tuple[Path, str]] = []
    for path in _iter_paths(paths, recursive):
        try:
            files.append(read_file_info(path))
        except NotDicomError as exc:
            skipped.append((path, str(exc)))
        except OSError as exc:
            skipped.append((path, f"{path}: {exc.strerror or exc}"))
        except Exception as exc:  # pydicom's own errors on broken meta information
            skipped.append((path, f"{path}: not readable as DICOM ({exc})"))
    return files, skipped


@main.command()
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--aet", default="DICOMNET", show_default=True, help="Our (calling) AE title.")
@click.option("--aec", default="ANY-SCP", show_default=True, help="The peer's (called) AE title.")
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders of folders.")
@click.option(
    "--max-pdu",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(0, 2**32 - 1),
    help="Largest PDU we accept (0 = unlimited).",
)
@click.option(
    "--async-ops",
    default=1,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Requests outstanding at once (asynchronous operations window; 0 = unlimited).",
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("-q", "--quiet", is_flag=True, help="Only the summary and the failures.")
@click.option("-v", "--verbose", count=True, help="Log the association (-vv: and every PDU).")
def store(
    host: str,
    port: int,
    paths: tuple[str, ...],
    aet: str,
    aec: str,
    recursive: bool,
    max_pdu: int,
    async_ops: int,
    timeout: float,
    quiet: bool,
    verbose: int,
) -> None:
    """Send DICOM files and folders with C-STORE (like DCMTK's storescu).

    All files go in one association (more only when they need over 128 presentation contexts),
    proposing each file's own SOP class and transfer syntax; the data sets are streamed from
    disk, not re-encoded. Files that are not DICOM are reported and skipped. A progress bar
    (files, MB, MB/s) on a terminal, one line per file otherwise, and a summary at the end.

    Exit code: 0 when every DICOM file was stored (success or warning), 1 when any failed or
    none was found, 2 when the peer could not be reached or rejected the association.
    """
    _setup_logging(verbose, quiet=verbose == 0)
    files, skipped = _scan(paths, recursive)
    for _path, why in skipped:
        click.echo(f"skipped: {why}", err=True)
    if not files:
        click.echo(f"nothing to send: no DICOM file among {len(skipped)} files", err=True)
        sys.exit(1)
    sys.exit(
        _client_main(
            lambda: _store(
                host, port, aet, aec, files, max_pdu, async_ops, timeout, quiet, len(skipped)
            )
        )
    )


def _contexts_for(files: Sequence[FileInfo]) -> list[list[ProposedContext]]:
    """Group the files' (SOP class, transfer syntax) pairs into associations of at most
    ``MAX_CONTEXTS`` presentation contexts (PS3.8 §9.3.2.2: odd context IDs 1-255)."""
    pairs: dict[tuple[str, str], None] = {}
    for f in files:
        pairs[(f.sop_class_uid, f.transfer_syntax)] = None
    groups: list[list[ProposedContext]] = [[]]
    for sop_class, ts in pairs:
        probe = CStoreRequest(sop_class_uid=sop_class, transfer_syntax=ts).contexts()
        if len(groups[-1]) + len(probe) > MAX_CONTEXTS:
            groups.append([])
        groups[-1].extend(probe)
    return groups


MAX_CONTEXTS = 128


async def _store(
    host: str,
    port: int,
    aet: str,
    aec: str,
    files: list[FileInfo],
    max_pdu: int,
    async_ops: int,
    timeout: float,
    quiet: bool,
    skipped: int,
) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    total_bytes = sum(f.size for f in files)
    interactive = sys.stdout.isatty() and not quiet
    sent = warnings = done = 0
    failures: list[tuple[Path, str]] = []
    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]store[/]"),
        BarColumn(),
        TextColumn("{task.fields[done]}/{task.fields[count]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not interactive,
    )
    groups = _contexts_for(files)
    group_of: dict[tuple[str, str], int] = {}
    for i, group in enumerate(groups):
        for ctx in group:
            group_of.setdefault((ctx.abstract_syntax, ctx.transfer_syntaxes[0]), i)
    by_group: list[list[FileInfo]] = [[] for _ in groups]
    for f in files:
        by_group[group_of[(f.sop_class_uid, f.transfer_syntax)]].append(f)

    with progress:
        task = progress.add_task("store", total=total_bytes, done=0, count=len(files))

        def finished(info: FileInfo, line: str | None) -> None:
            nonlocal done
            done += 1
            progress.update(task, advance=info.size, done=done)
            if line is not None and not interactive and not quiet:
                click.echo(line)

        def on_response(request: Request, response: Any) -> None:
            nonlocal sent, warnings
            assert isinstance(request, CStoreRequest) and request.file is not None
            status = int(getattr(response, "status", 0xFFFF))
            cat = category(status)
            if cat is StatusCategory.PENDING:
                return
            path = request.file.path
            if cat is StatusCategory.SUCCESS:
                sent += 1
                finished(request.file, f"stored: {path}")
                return
            comment = getattr(response, "error_comment", None)
            why = describe(status) + (f": {comment}" if comment else "")
            if cat is StatusCategory.WARNING:
                sent += 1
                warnings += 1
                finished(request.file, f"stored with warning: {path}: {why}")
            else:
                failures.append((path, why))
                finished(request.file, f"failed: {path}: {why}")

        for contexts, group_files in zip(groups, by_group, strict=True):
            if not group_files:
                continue
            async with DicomClient(
                host,
                port,
                aet,
                aec,
                max_pdu_length=max_pdu,
                dimse_timeout=timeout,
                acse_timeout=timeout,
                connect_timeout=timeout,
            ) as client:
                for ctx in contexts:
                    client.add_presentation_context(ctx.abstract_syntax, ctx.transfer_syntaxes)
                if async_ops != 1:
                    client.negotiate_async_ops(async_ops, 1)
                requests = [
                    CStoreRequest(
                        on_response=on_response,
                        file=f,
                        sop_class_uid=f.sop_class_uid,
                        sop_instance_uid=f.sop_instance_uid,
                        transfer_syntax=f.transfer_syntax,
                    )
                    for f in group_files
                ]
                for request in requests:
                    await client.add_request(request)
                await client.send()
                for request in requests:
                    if request.error is not None and request.file is not None:
                        why = f"not sent: {request.error}"
                        if isinstance(request.error, NegotiationError):
                            why += (
                                f" ({uid_name(request.sop_class_uid)} in "
                                f"{uid_name(request.transfer_syntax)})"
                            )
                        failures.append((request.file.path, why))
                        finished(request.file, f"failed: {request.file.path}: {why}")
    elapsed = max(time.perf_counter() - start, 1e-9)
    mb = total_bytes / 1e6
    click.echo(
        f"sent {sent} of {len(files)} files ({mb:.1f} MB) in {elapsed:.2f} s "
        f"({len(files) / elapsed:.1f} files/s, {mb / elapsed:.1f} MB/s); "
        f"{warnings} warnings, {len(failures)} failed, {skipped} skipped (not DICOM)"
    )
    for path, why in failures:
        click.echo(f"failed: {path}: {why}", err=True)
    return 1 if failures else 0


# --- serve ----------------------------------------------------------------------------------------


def _load_config(path: str | None, known: set[str]) -> dict[str, Any]:
    """The ``[serve]`` table of a TOML file (or its top level), keys as the options' long names
    with ``_`` or ``-``; unknown keys are an error, not silently ignored."""
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
    if table is not data and "peers" in data:  # a top-level [peers] table beside [serve]
        table = {**table, "peers": data["peers"]}
    cfg = {str(k).replace("-", "_"): v for k, v in table.items()}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise click.BadParameter(
            f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            param_hint="--config",
        )
    return cfg


@main.command()
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
    "--peer",
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
    "--config",
    "config_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="TOML file with any of these options (a [serve] table or top level; "
    "command-line options win).",
)
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.option("-v", "--verbose", count=True, help="Debug logging (-v), with PDU dumps.")
def serve(
    host: str | None,
    port: int | None,
    aet: str | None,
    strict_aet: bool | None,
    storage: str | None,
    layout: str | None,
    allow_ae: tuple[str, ...],
    no_fsync: bool | None,
    max_associations: int | None,
    peer: tuple[str, ...],
    no_index: bool | None,
    workers: int | None,
    shutdown_timeout: float | None,
    config_path: str | None,
    quiet: bool,
    verbose: int,
) -> None:
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
    """
    from dicomnet.archive.storage import DEFAULT_LAYOUT
    from dicomnet.server import DicomServer, ServerLimits
    from dicomnet.services.qr import ArchiveService
    from dicomnet.services.storage import INDEX_NAME, StorageService, mark_clean, open_index

    _setup_logging(verbose, quiet)
    ctx = click.get_current_context()
    known = {p.name for p in ctx.command.params if p.name} - {"config_path", "quiet", "verbose"}
    known.add("peers")
    cfg = _load_config(config_path, known)

    def pick(value: Any, key: str, default: Any) -> Any:
        return value if value not in (None, ()) else cfg.get(key.replace("-", "_"), default)

    def number(value: Any, key: str, default: int | float) -> Any:
        """An option that is a number, as ``type(default)``; ValueError names the option."""
        raw = pick(value, key, default)
        try:
            if isinstance(raw, bool):
                raise TypeError
            return type(default)(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, not {raw!r}") from None

    listening: socket.socket | None = None
    workers_v = 1
    try:
        host_v = str(pick(host, "host", "127.0.0.1"))
        port_v = number(port, "port", 11112)
        aet_v = str(pick(aet, "aet", "DICOMNET"))
        storage_v = Path(pick(storage, "storage", "dicom-store"))
        layout_v = str(pick(layout, "layout", DEFAULT_LAYOUT))
        allowed_raw = pick(allow_ae, "allow-ae", [])
        allowed = [allowed_raw] if isinstance(allowed_raw, str) else [str(a) for a in allowed_raw]
        fsync = not bool(pick(no_fsync, "no-fsync", False))
        strict = bool(pick(strict_aet, "strict-aet", False))
        grace = number(shutdown_timeout, "shutdown-timeout", 10.0)
        limits = ServerLimits(max_associations=number(max_associations, "max-associations", 64))
        peers = _parse_peers(peer or cfg.get("peers", cfg.get("peer", ())))
        indexed = not bool(pick(no_index, "no-index", False))
        workers_v = number(workers, "workers", 1)
        if workers_v < 1:
            raise ValueError(f"workers must be at least 1, not {workers_v}")
        if workers_v > 1:
            if indexed:
                open_index(storage_v).close()  # repair once, before the workers start
            try:
                listening = socket.create_server((host_v, port_v), backlog=256)
            except OSError as exc:
                raise click.UsageError(f"cannot listen on {host_v}:{port_v}: {exc}") from None
        children = _fork_workers(workers_v - 1)
        is_worker = children is None
        index = open_index(storage_v, repair=workers_v == 1) if indexed else None
        service = ArchiveService if indexed else StorageService
        factory = service.factory(
            storage_v,
            layout=layout_v,
            ae_title=aet_v if strict else None,
            allowed_calling_aes=allowed,
            fsync=fsync,
            index=index,
            peers=peers,
            aet=aet_v,
        )
    except (TypeError, ValueError) as exc:
        raise click.UsageError(f"bad option value: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise click.UsageError(
            f"the index {storage_v / INDEX_NAME} is not usable ({exc}); the stored files are "
            f"untouched: move the index away and rebuild it with `dicomnet index {storage_v}`, "
            "or start with --no-index"
        ) from None
    except OSError as exc:
        raise click.UsageError(f"cannot use storage folder {storage_v}: {exc}") from None

    stopped_cleanly = True  # marks the index clean at the end (no repair on the next start)

    async def go() -> None:
        nonlocal stopped_cleanly
        server = DicomServer(factory, host_v, port_v, limits=limits, sock=listening)
        await server.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "AE %s on %s:%d, storing into %s%s",
            aet_v,
            host_v,
            server.port,
            storage_v.resolve(),
            f", calling AE titles allowed: {', '.join(allowed)}" if allowed else "",
        )
        if index is not None:
            log.info(
                "query/retrieve on; C-MOVE destinations: %s",
                ", ".join(f"{ae}={h}:{p}" for ae, (h, p) in peers.items()) or "none",
            )
        if not is_worker:
            click.echo(
                f"dicomnet serve: listening on {host_v}:{server.port} as {aet_v}, "
                f"storing into {storage_v}"
                + (f" with {workers_v} processes" if workers_v > 1 else "")
                + " (Ctrl-C to stop)",
                err=True,
            )
        await stop.wait()
        log.info(
            "stopping: %d running association(s) get %g s to finish (signal again to abort)",
            server.active,
            grace,
        )
        now = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, now.set)
        closing = asyncio.ensure_future(server.close(abort_after=grace))
        second = asyncio.ensure_future(now.wait())
        await asyncio.wait({closing, second}, return_when=asyncio.FIRST_COMPLETED)
        if not closing.done():
            log.warning("second signal: aborting %d running association(s)", server.active)
            await server.close(abort_after=0)
        await closing
        second.cancel()
        if children and not await asyncio.to_thread(_stop_workers, children, grace + 5):
            stopped_cleanly = False
        if not is_worker:
            _clean_incoming(storage_v / ".incoming")
        log.info("stopped after %d association(s)", server.associations_served)

    try:
        _run(go())
    except OSError as exc:
        stopped_cleanly = False
        click.echo(f"error: cannot listen on {host_v}:{port_v}: {exc}", err=True)
        sys.exit(2)
    except BaseException:
        stopped_cleanly = False
        raise
    finally:
        if factory.index_writer is not None and not factory.index_writer.close():
            stopped_cleanly = False  # rows of the last instances are missing: repair next time
        if index is not None:
            if stopped_cleanly and not is_worker:
                mark_clean(index)
            index.close()


def _parse_peers(value: Any) -> dict[str, tuple[str, int]]:
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


# --- index ----------------------------------------------------------------------------------------


@main.command("index")
@click.argument("storage", type=click.Path(file_okay=False))
@click.option(
    "--fresh",
    is_flag=True,
    help="Delete the index first and build it from nothing (not while a server uses it).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, only the summary.")
@click.option("-v", "--verbose", count=True, help="Log every file skipped (-v) and more (-vv).")
def index_command(storage: str, fresh: bool, quiet: bool, verbose: int) -> None:
    """Build or rebuild the query/retrieve index of STORAGE (STORAGE/.dicomnet-index.sqlite),
    e.g. of a folder written by DCMTK's storescp or copied from elsewhere: every DICOM file in
    any layout is (re)indexed, rows whose file is gone are dropped, other files are skipped.
    Safe while `dicomnet serve` runs on the folder (unless --fresh)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dicomnet.archive.index import _walk, build_index, reconcile
    from dicomnet.services.storage import INDEX_NAME, open_index

    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.WARNING if verbose else logging.ERROR,
        format="%(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    root = Path(storage)
    if not root.is_dir():
        raise click.UsageError(f"{root} is not a folder")
    if fresh:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(root / (INDEX_NAME + suffix))
    start = time.perf_counter()
    total = sum(1 for _ in _walk(root))
    try:
        index = open_index(root, repair=False)
    except Exception as exc:
        click.echo(f"error: cannot open the index of {root}: {exc}", err=True)
        sys.exit(2)
    progress = Progress(
        TextColumn("[bold]index[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeElapsedColumn(),
        disable=quiet or not sys.stderr.isatty(),
    )
    try:
        with progress:
            task = progress.add_task("index", total=total)
            indexed = build_index(root, index, lambda n: progress.update(task, completed=n))
        _added, dropped = reconcile(index, root)  # rows of files that are gone
        entities: tuple[set[str | None], ...] = (set(), set(), set())
        for r in index.records():
            for seen, value in zip(
                entities, (r.patient_id, r.study_instance_uid, r.series_instance_uid), strict=True
            ):
                seen.add(value)
        patients, studies, series = (len(seen) for seen in entities)
    finally:
        index.close()
    seconds = time.perf_counter() - start
    click.echo(
        f"indexed {indexed} of {total} files in {seconds:.1f} s "
        f"({total - indexed} skipped, {dropped} stale rows dropped): "
        f"{patients} patients, {studies} studies, {series} series"
    )


def _fork_workers(count: int) -> list[int] | None:
    """Start ``count`` more processes running the same server (before any thread or event loop
    exists); returns their PIDs in the parent and None in a worker."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            return None
        children.append(pid)
    return children


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the parent dies, even by SIGKILL, so that no orphan
    keeps the port."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        os.kill(os.getpid(), signal.SIGTERM)


def _stop_workers(children: list[int], timeout: float) -> bool:
    """SIGTERM the workers (each finishes its associations like the parent) and reap them;
    SIGKILL what is left after ``timeout`` seconds. True when every worker exited with 0."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    pending = set(children)
    clean = True
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 1
            if done:
                pending.discard(pid)
                if os.waitstatus_to_exitcode(status) != 0:
                    log.warning("worker %d exited with %s", pid, os.waitstatus_to_exitcode(status))
                    clean = False
        if pending:
            time.sleep(0.05)
    for pid in pending:
        log.warning("worker %d did not stop in %.0f s; killing it", pid, timeout)
        clean = False
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return clean


def _clean_incoming(folder: Path) -> None:
    """Remove temporary files left by transfers that did not complete, then the empty
    temporary folders."""
    if not folder.is_dir():
        return
    for leftover in folder.rglob(".dicomnet-*.part"):
        try:
            os.unlink(leftover)
        except OSError:
            pass
    for sub in sorted(folder.glob(".dicomnet-*"), reverse=True):
        if sub.is_dir():
            try:
                sub.rmdir()
            except OSError:
                pass
    try:
        folder.rmdir()
    except OSError:  # not empty: something else lives there
        pass


from dicomnet.cli.qr import COMMANDS as _QR_COMMANDS  # noqa: E402  (find, move, get)

for _command in _QR_COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
