"""The ``dicomnet`` command: the group, and echo, store and index; serve lives in
``cli/serve.py``, find, move and get in ``cli/qr.py``, worklist, mpps and commit in
``cli/workflow.py``, what they share in ``cli/common.py``.

Rules: commands only parse options, call the library and present results; anything a library
user would also need lives in the library. Exit code 0 only when everything succeeded. This
module imports the other command modules; none of them imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from dicomnet.cli.common import CONTEXT_SETTINGS, client_main, setup_logging
from dicomnet.cli.common import scan_files as _scan
from dicomnet.cli.qr import COMMANDS as QR_COMMANDS
from dicomnet.cli.security import ClientSecurity, client_security_options, passwd
from dicomnet.cli.serve import serve
from dicomnet.cli.web import web
from dicomnet.cli.workflow import COMMANDS as WORKFLOW_COMMANDS
from dicomnet.client import CStoreRequest, DicomClient, Request
from dicomnet.dataset import FileInfo
from dicomnet.dimse.status import StatusCategory, category, describe
from dicomnet.errors import AssociationAborted, NegotiationError, TranscodeError
from dicomnet.negotiation import ProposedContext
from dicomnet.pixels import ALIASES, Action, Target, TranscodePolicy, as_target, storage_plan
from dicomnet.pixels.syntaxes import syntax_name
from dicomnet.requests import instance_names
from dicomnet.uids import uid_name

log = logging.getLogger("dicomnet.cli")


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
@client_security_options
def echo(
    host: str,
    port: int,
    aet: str,
    aec: str,
    count: int,
    timeout: float,
    verbose: int,
    security: ClientSecurity,
) -> None:
    """Verify a peer with C-ECHO (like DCMTK's echoscu); prints each status and round-trip time.

    Exit code: 0 when every C-ECHO succeeded, 1 when one answered another status, 2 when the
    peer could not be reached or rejected the association.
    """
    setup_logging(verbose, quiet=verbose == 0)

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
            **security.client_kwargs(),
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

    sys.exit(client_main(go))


# --- store ----------------------------------------------------------------------------------------


#: ``--propose``: which contexts to propose for each file besides the ``--transfer-syntax`` ones.
PROPOSALS: dict[str, tuple[bool, bool]] = {  # name -> (own syntax, uncompressed fallback)
    "auto": (True, True),
    "own": (True, False),
    "uncompressed": (False, True),
}


def _store_policy(
    transfer_syntaxes: Sequence[str],
    propose: str,
    allow_lossy: bool,
    allow_lossy_to_lossy: bool,
) -> TranscodePolicy:
    """The transcoding policy of ``dicomnet store``'s options; a usage error for a syntax that
    is unknown or lossy without ``--allow-lossy``."""
    targets: list[Target] = []
    for name in transfer_syntaxes:
        try:
            target = as_target(name)
        except (TranscodeError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--transfer-syntax") from None
        if target.lossy and not allow_lossy:
            raise click.BadParameter(
                f"{name} ({target}) is lossy: add --allow-lossy to compress with loss",
                param_hint="--transfer-syntax",
            )
        targets.append(target)
    own, fallback = PROPOSALS[propose]
    return TranscodePolicy(
        targets=tuple(targets),
        # "own": the files go as they are (or re-encoded between uncompressed syntaxes), never
        # decompressed: dcmsend's --decompress-never.
        decompress=fallback,
        allow_lossy=allow_lossy,
        allow_lossy_to_lossy=allow_lossy_to_lossy,
        propose_own=own,
        propose_fallback=fallback,
    )


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
@click.option(
    "-x",
    "--transfer-syntax",
    "transfer_syntaxes",
    multiple=True,
    metavar="NAME",
    help="Send the images in this transfer syntax when the peer accepts it, compressing them "
    "(repeat for a preference order; a UID or one of: " + ", ".join(ALIASES) + "). Lossy ones "
    "need --allow-lossy.",
)
@click.option(
    "--propose",
    type=click.Choice(list(PROPOSALS)),
    default="auto",
    show_default=True,
    help="Contexts proposed per file besides --transfer-syntax: auto = its own syntax and an "
    "uncompressed fallback (decompressed only when the peer takes nothing else); own = its own "
    "syntax only, never decompressed (dcmsend --decompress-never); uncompressed = the "
    "uncompressed syntaxes only, every image decompressed (storescu's default).",
)
@click.option("--allow-lossy", is_flag=True, help="Allow lossy --transfer-syntax targets.")
@click.option(
    "--allow-lossy-to-lossy",
    is_flag=True,
    help="Also compress images that were lossy compressed before with a lossy target.",
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("-q", "--quiet", is_flag=True, help="Only the summary and the failures.")
@click.option("-v", "--verbose", count=True, help="Log the association (-vv: and every PDU).")
@client_security_options
def store(
    host: str,
    port: int,
    paths: tuple[str, ...],
    aet: str,
    aec: str,
    recursive: bool,
    max_pdu: int,
    async_ops: int,
    transfer_syntaxes: tuple[str, ...],
    propose: str,
    allow_lossy: bool,
    allow_lossy_to_lossy: bool,
    timeout: float,
    quiet: bool,
    verbose: int,
    security: ClientSecurity,
) -> None:
    """Send DICOM files and folders with C-STORE (like DCMTK's storescu / dcmsend).

    All files go in one association (more only when they need over 128 presentation contexts).
    Each file's own SOP class and transfer syntax are proposed, with an uncompressed fallback:
    a file goes as it is when the peer accepts its syntax (streamed from disk), else re-encoded
    or decompressed (lossless decoding; lossy images keep Lossy Image Compression "01") into an
    uncompressed syntax the peer accepted, off the event loop on every core. With
    --transfer-syntax, images are compressed to it when the peer accepts it; lossy compression
    only with --allow-lossy (the copy gets a new SOP Instance UID). Files that are not DICOM are
    reported and skipped. A progress bar (files, MB, MB/s) on a terminal, one line per file
    otherwise, and a summary at the end that counts the files converted and how.

    Exit code: 0 when every DICOM file was stored (success or warning), 1 when any failed or
    none was found, 2 when the peer could not be reached or rejected the association.
    """
    setup_logging(verbose, quiet=verbose == 0)
    policy = _store_policy(transfer_syntaxes, propose, allow_lossy, allow_lossy_to_lossy)
    files, skipped = _scan(paths, recursive)
    for _path, why in skipped:
        click.echo(f"skipped: {why}", err=True)
    if not files:
        click.echo(f"nothing to send: no DICOM file among {len(skipped)} files", err=True)
        sys.exit(1)
    sys.exit(
        client_main(
            lambda: _store(
                host,
                port,
                aet,
                aec,
                files,
                max_pdu,
                async_ops,
                timeout,
                quiet,
                len(skipped),
                policy,
                security,
            )
        )
    )


_DONE = {
    Action.REENCODE: "re-encoded",
    Action.DECOMPRESS: "decompressed",
    Action.COMPRESS: "compressed",
    Action.TRANSCODE: "transcoded",
}


def _conversion(request: CStoreRequest) -> tuple[str, str] | None:
    """How a request's data set was converted: the summary's words ("decompressed JPEG-LS
    Lossless -> Explicit VR Little Endian") and the file line's (with the new SOP Instance UID
    of a lossy copy); None when it was sent as it was."""
    result = request.transcoded
    if result is None:
        return None
    target = request.choice.target if request.choice else syntax_name(result.transfer_syntax)
    how = (
        f"{_DONE.get(result.action, str(result.action))} "
        f"{syntax_name(result.source_syntax)} -> {target}"
    )
    if result.lossy:
        return how, f"{how}, lossy: new SOP Instance UID {result.sop_instance_uid}"
    return how, how


def _one_line(error: BaseException, path: Path) -> str:
    """An error as one line, without the path its message may start with."""
    text = " ".join(str(error).split()) or type(error).__name__
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


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
    policy: TranscodePolicy,
    security: ClientSecurity | None = None,
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
    conversions: dict[str, int] = {}
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
    # PS3.7 9.1.1.1: a C-STORE-RQ names the SOP class and instance (the data set's, else the
    # meta information's); a file that names neither cannot be sent (nor proposed).
    names = {f.path: instance_names(f) for f in files}
    sendable: list[FileInfo] = []
    for f in files:
        sop_class, sop_instance = names[f.path].sop_class_uid, names[f.path].sop_instance_uid
        missing = [
            name
            for name, value in (("SOP Class UID", sop_class), ("SOP Instance UID", sop_instance))
            if not value
        ]
        if missing:
            why = " and ".join(missing)
            failures.append((f.path, f"not sent: no {why} in its meta information or data set"))
        else:
            sendable.append(f)
    plan = storage_plan(
        ((names[f.path].sop_class_uid, f.transfer_syntax) for f in sendable), policy
    )
    group_of = {pair: i for i, (_, pairs) in enumerate(plan) for pair in pairs}
    by_group: list[list[FileInfo]] = [[] for _ in plan]
    for f in sendable:
        by_group[group_of[(names[f.path].sop_class_uid, f.transfer_syntax)]].append(f)

    with progress:
        task = progress.add_task("store", total=total_bytes, done=0, count=len(files))
        for path, why in failures:
            if not interactive and not quiet:
                click.echo(f"failed: {path}: {why}")

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
            conversion = _conversion(request)
            note = ""
            if conversion is not None:
                conversions[conversion[0]] = conversions.get(conversion[0], 0) + 1
                note = f" ({conversion[1]})"
            if cat is StatusCategory.SUCCESS:
                sent += 1
                finished(request.file, f"stored: {path}{note}")
                return
            comment = getattr(response, "error_comment", None)
            why = describe(status) + (f": {comment}" if comment else "")
            if cat is StatusCategory.WARNING:
                sent += 1
                warnings += 1
                finished(request.file, f"stored with warning: {path}{note}: {why}")
            else:
                failures.append((path, why + note))
                finished(request.file, f"failed: {path}: {why}{note}")

        async def send_group(
            contexts: list[ProposedContext], group_files: list[FileInfo]
        ) -> list[CStoreRequest]:
            async with DicomClient(
                host,
                port,
                aet,
                aec,
                max_pdu_length=max_pdu,
                dimse_timeout=timeout,
                acse_timeout=timeout,
                connect_timeout=timeout,
                transcode_policy=policy,
                **(security.client_kwargs() if security is not None else {}),
            ) as client:
                for ctx in contexts:
                    client.add_presentation_context(ctx.abstract_syntax, ctx.transfer_syntaxes)
                if async_ops != 1:
                    client.negotiate_async_ops(async_ops, 1)
                requests = [
                    CStoreRequest(
                        on_response=on_response,
                        file=f,
                        sop_class_uid=names[f.path].sop_class_uid,
                        sop_instance_uid=names[f.path].sop_instance_uid,
                        transfer_syntax=f.transfer_syntax,
                        mislabelled=names[f.path].mislabelled,
                    )
                    for f in group_files
                ]
                for request in requests:
                    await client.add_request(request)
                await client.send()
                if client.negotiated is not None:
                    log.info(
                        "association: %d presentation contexts accepted, asynchronous "
                        "operations window %s",
                        len(client.negotiated.contexts),
                        client.negotiated.max_operations_invoked or "unlimited",
                    )
            return requests

        for (contexts, _pairs), group_files in zip(plan, by_group, strict=True):
            remaining = group_files
            while remaining:
                requests = await send_group(contexts, remaining)
                # A peer that aborts (DCMTK's storescp does on a data set it cannot parse)
                # fails the files in flight; those never sent go in a new association.
                unsent = [
                    r
                    for r in requests
                    if isinstance(r.error, AssociationAborted) and r.message_id == 0
                ]
                retry = 0 < len(unsent) < len(requests)
                if retry:
                    log.warning(
                        "the association ended before %d of %d files were sent (%s); sending "
                        "them in a new association",
                        len(unsent),
                        len(requests),
                        _one_line(unsent[0].error or AssociationAborted(""), Path()),
                    )
                remaining = [r.file for r in unsent if r.file is not None] if retry else []
                for request in requests:
                    if request.error is None or request.file is None:
                        continue
                    if retry and request in unsent:
                        continue
                    why = f"not sent: {_one_line(request.error, request.file.path)}"
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
    if conversions:
        counted = sorted(conversions.items(), key=lambda item: (-item[1], item[0]))
        click.echo(
            f"converted {sum(conversions.values())} of {len(files)} files: "
            + "; ".join(f"{n} {how}" for how, n in counted)
        )
    for path, why in failures:
        click.echo(f"failed: {path}: {why}", err=True)
    return 1 if failures else 0


# --- index ----------------------------------------------------------------------------------------


@main.command("index")
@click.argument("storage", type=click.Path(file_okay=False))
@click.option(
    "--fresh",
    is_flag=True,
    help="Delete the index first and build it from nothing (not while a server uses it).",
)
@click.option(
    "--no-metadata",
    is_flag=True,
    help="Skip the DICOMweb metadata of each instance (then computed on first request).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, only the summary.")
@click.option("-v", "--verbose", count=True, help="Log every file skipped (-v) and more (-vv).")
def index_command(storage: str, fresh: bool, no_metadata: bool, quiet: bool, verbose: int) -> None:
    """Build or rebuild the query/retrieve index of STORAGE (STORAGE/.dicomnet-index.sqlite),
    e.g. of a folder written by DCMTK's storescp or copied from elsewhere: every DICOM file in
    any layout is (re)indexed, rows whose file is gone are dropped, other files are skipped.
    The DICOMweb metadata of every instance (one JSON fragment each, in the same file) is
    computed where it is missing or stale. Safe while `dicomnet serve` runs on the folder
    (unless --fresh)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dicomnet.archive.index import build_index, iter_files, reconcile
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
    total = sum(1 for _ in iter_files(root))
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
            fragments = 0 if no_metadata else _index_metadata(root, index, progress)
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
        + ("" if no_metadata else f"; DICOMweb metadata of {fragments} instances computed")
    )


def _index_metadata(root: Path, index: Any, progress: Any) -> int:
    """The metadata fragments of the indexed instances that have none or a stale one."""
    from dicomnet.archive.metadata import MetadataStore, build_metadata

    records = [(r.sop_instance_uid, r.path) for r in index.records()]
    store = MetadataStore(index.path)
    try:
        task = progress.add_task("metadata", total=len(records))
        return build_metadata(root, records, store, lambda n: progress.update(task, completed=n))
    finally:
        store.close()


for _command in (serve, passwd, *QR_COMMANDS, *WORKFLOW_COMMANDS, web):
    main.add_command(_command)

if __name__ == "__main__":
    main()
