"""``dicomnet worklist``, ``dicomnet mpps`` and ``dicomnet commit``: a modality's workflow from the
command line. ``worklist add|list|remove`` and ``mpps list`` work on a storage folder's index file
(also while ``dicomnet serve`` runs on it); ``mpps create|set`` and ``commit`` are SCUs.

Rules: options are parsed here and the library does the work (``WorklistStore``, ``MppsStore``,
``DicomClient.n_create/n_set``, ``DicomClient.request_commitment``, ``CommitmentReports``).
Results go to stdout, summaries and errors to stderr. Exit code 0 only when everything
succeeded; 1 for a failure status, an item or instance that failed, or a file that cannot be
used; 2 when the peer could not be reached or the association failed.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from dicomnet.archive.commitment import CommitmentReport
from dicomnet.archive.mpps import MODALITY_PERFORMED_PROCEDURE_STEP, MppsStore
from dicomnet.archive.worklist import WorklistError, WorklistStore, read_csv, read_json
from dicomnet.cli.common import CONTEXT_SETTINGS, client_main, setup_logging
from dicomnet.cli.security import ClientSecurity, client_security_options
from dicomnet.dimse.status import describe

#: The index file inside a storage folder (``services.storage.INDEX_NAME``).
INDEX_NAME = ".dicomnet-index.sqlite"

#: Failure Reason (0008,1197) of a commitment report (PS3.3 C.14.1.1).
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0119: "class/instance conflict",
    0x0122: "referenced SOP class not supported",
    0x0131: "duplicate transaction UID",
    0x0213: "resource limitation",
}


def _index_file(storage: str) -> Path:
    folder = Path(storage)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"cannot use storage folder {folder}: {exc}") from None
    return folder / INDEX_NAME


def _storage_option(func: Any) -> Any:
    return click.option(
        "--storage",
        default="dicom-store",
        show_default=True,
        type=click.Path(file_okay=False),
        help="The storage folder of `dicomnet serve` (its index file holds the data).",
    )(func)


def read_datasets(path: Path) -> list[Dataset]:
    """The data sets of a file: DICOM JSON (one object or an array), CSV (a header of
    keywords, one item per row) or a DICOM file (Part 10, or a bare data set)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path.read_text(encoding="utf-8-sig"))
    if suffix == ".json":
        return read_json(path.read_text(encoding="utf-8"))
    try:
        return [dcmread(path, force=suffix in (".wl", ".dcm", ""))]
    except InvalidDicomError:
        text = path.read_text(encoding="utf-8", errors="replace").lstrip()
        if text.startswith(("{", "[")):
            return read_json(text)
        raise WorklistError(f"{path}: not DICOM, DICOM JSON (.json) or CSV (.csv)") from None
    except Exception as exc:  # pydicom raises several types on broken files
        raise WorklistError(f"{path}: not readable as DICOM ({exc})") from None


# --- worklist -------------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT_SETTINGS)
def worklist() -> None:
    """The Modality Worklist `dicomnet serve` answers: add, list and remove items.

    Items live in the index file of the storage folder, so these commands work while the server
    runs. Each Scheduled Procedure Step is one item (a data set with several becomes several),
    identified by Accession Number|Requested Procedure ID|Scheduled Procedure Step ID unless
    given an --id."""


@worklist.command("add")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@_storage_option
@click.option("--id", "item_id", default=None, help="The item's id (one data set only).")
def worklist_add(files: tuple[str, ...], storage: str, item_id: str | None) -> None:
    """Add (or replace) worklist items from DICOM files, DICOM JSON (.json) or CSV (.csv: a
    header of keywords; Modality, ScheduledStationAETitle, ScheduledProcedureStepStartDate...
    go into the Scheduled Procedure Step item)."""
    datasets: list[Dataset] = []
    try:
        for name in files:
            datasets += read_datasets(Path(name))
    except (WorklistError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if item_id is not None and len(datasets) != 1:
        raise click.UsageError(f"--id names one item; the files hold {len(datasets)}")
    try:
        with WorklistStore(_index_file(storage)) as store:
            ids = store.add_many(datasets, [item_id] if item_id else None)
            total = len(store)
    except WorklistError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    for added in ids:
        click.echo(added)
    click.echo(f"{len(ids)} item(s) added; {total} in the worklist", err=True)


@worklist.command("list")
@_storage_option
@click.option("--json", "as_json", is_flag=True, help="Every item in the DICOM JSON model.")
@click.option("--csv", "as_csv", is_flag=True, help="The summary as CSV.")
def worklist_list(storage: str, as_json: bool, as_csv: bool) -> None:
    """List the worklist items (oldest first)."""
    with WorklistStore(_index_file(storage)) as store:
        items = list(store.items())
    if as_json:
        click.echo(json.dumps({i.item_id: i.dataset.to_json_dict() for i in items}, indent=2))
        return
    rows = [item.summary() for item in items]
    _print_rows(rows, as_csv, empty="the worklist is empty")


@worklist.command("remove")
@click.argument("ids", nargs=-1, required=True)
@_storage_option
def worklist_remove(ids: tuple[str, ...], storage: str) -> None:
    """Remove items by id (as `dicomnet worklist list` shows them)."""
    missing = 0
    with WorklistStore(_index_file(storage)) as store:
        for item_id in ids:
            if store.remove(item_id):
                click.echo(f"removed {item_id}")
            else:
                missing += 1
                click.echo(f"error: no worklist item {item_id!r}", err=True)
    sys.exit(1 if missing else 0)


def _print_rows(rows: Sequence[dict[str, str]], as_csv: bool, *, empty: str) -> None:
    if not rows:
        click.echo(empty, err=True)
        return
    columns = list(rows[0])
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    Console(width=None if sys.stdout.isatty() else 250).print(table)


# --- mpps -----------------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT_SETTINGS)
def mpps() -> None:
    """Modality Performed Procedure Steps: report one to an SCP (create, set), or list those
    `dicomnet serve` received."""


def _scu_options(func: Any) -> Any:
    options = [
        click.argument("host"),
        click.argument("port", type=click.IntRange(1, 65535)),
        click.option(
            "--aet", default="DICOMNET", show_default=True, help="Our (calling) AE title."
        ),
        click.option(
            "--aec", default="ANY-SCP", show_default=True, help="The peer's (called) AE title."
        ),
        click.option(
            "--timeout", default=60.0, show_default=True, help="Seconds to wait for each answer."
        ),
        click.option("-v", "--verbose", count=True, help="Log the association (-vv: every PDU)."),
    ]
    func = client_security_options(func)  # the TLS and --user options, as ``security``
    for option in reversed(options):
        func = option(func)
    return func


def _one_dataset(path: str) -> Dataset:
    try:
        datasets = read_datasets(Path(path))
    except (WorklistError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from None
    if len(datasets) != 1:
        raise click.BadParameter(f"{path} holds {len(datasets)} data sets, not one")
    ds = datasets[0]
    ds.file_meta = None  # type: ignore[assignment]  # the attribute list only
    return ds


def _client(
    host: str, port: int, aet: str, aec: str, timeout: float, security: ClientSecurity
) -> Any:
    from dicomnet.client import DicomClient

    return DicomClient(
        host,
        port,
        aet,
        aec,
        connect_timeout=timeout,
        acse_timeout=timeout,
        dimse_timeout=timeout,
        **security.client_kwargs(),
    )


@mpps.command("create")
@_scu_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--uid", default=None, help="The MPPS SOP Instance UID (default: the SCP's).")
def mpps_create(
    host: str,
    port: int,
    aet: str,
    aec: str,
    timeout: float,
    verbose: int,
    security: ClientSecurity,
    file: str,
    uid: str | None,
) -> None:
    """N-CREATE an MPPS from FILE (DICOM or DICOM JSON; Performed Procedure Step Status must
    be IN PROGRESS). Prints the instance UID, for `dicomnet mpps set --uid`."""
    setup_logging(verbose, quiet=verbose == 0)
    ds = _one_dataset(file)
    uid = uid or _pop_uid(ds)

    async def go() -> int:
        async with _client(host, port, aet, aec, timeout, security) as client:
            result = await client.n_create(MODALITY_PERFORMED_PROCEDURE_STEP, uid, ds)
        if not result.ok:
            click.echo(f"error: N-CREATE: {_failure(result)}", err=True)
            return 1
        click.echo(result.affected_sop_instance_uid or uid or "")
        return 0

    sys.exit(client_main(go))


@mpps.command("set")
@_scu_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--uid", default=None, help="The MPPS SOP Instance UID (default: FILE's).")
def mpps_set(
    host: str,
    port: int,
    aet: str,
    aec: str,
    timeout: float,
    verbose: int,
    security: ClientSecurity,
    file: str,
    uid: str | None,
) -> None:
    """N-SET an MPPS with the modification list in FILE (DICOM or DICOM JSON), e.g. its
    Performed Procedure Step Status COMPLETED or DISCONTINUED and the Performed Series
    Sequence."""
    setup_logging(verbose, quiet=verbose == 0)
    ds = _one_dataset(file)
    uid = uid or _pop_uid(ds)
    if not uid:
        raise click.UsageError("give --uid (FILE has no SOP Instance UID)")

    async def go() -> int:
        async with _client(host, port, aet, aec, timeout, security) as client:
            result = await client.n_set(MODALITY_PERFORMED_PROCEDURE_STEP, uid, ds)
        if not result.ok:
            click.echo(f"error: N-SET {uid}: {_failure(result)}", err=True)
            return 1
        click.echo(f"{uid}: {ds.get('PerformedProcedureStepStatus', '') or 'updated'}")
        return 0

    sys.exit(client_main(go))


def _pop_uid(ds: Dataset) -> str | None:
    """A SOP Instance UID in the file names the MPPS; it is no attribute to create or set."""
    uid = str(ds.get("SOPInstanceUID", "") or "") or None
    for keyword in ("SOPInstanceUID", "SOPClassUID"):
        if keyword in ds:
            delattr(ds, keyword)
    return uid


def _failure(result: Any) -> str:
    text = describe(result.status)
    if result.error_comment:
        text += f": {result.error_comment}"
    if result.error_id is not None:
        text += f" (error ID 0x{result.error_id:04X})"
    return text


@mpps.command("list")
@_storage_option
@click.option("--json", "as_json", is_flag=True, help="Every MPPS in the DICOM JSON model.")
@click.option("--csv", "as_csv", is_flag=True, help="The summary as CSV.")
def mpps_list(storage: str, as_json: bool, as_csv: bool) -> None:
    """List the MPPS instances `dicomnet serve` received (oldest first), with the worklist
    item each performs."""
    with MppsStore(str(_index_file(storage))) as store:
        records = list(store.records())
    if as_json:
        click.echo(
            json.dumps({r.sop_instance_uid: r.dataset.to_json_dict() for r in records}, indent=2)
        )
        return
    rows = [
        {
            "SOPInstanceUID": r.sop_instance_uid,
            "Status": r.status,
            "WorklistItem": r.worklist_item_id or "",
            "From": r.calling_ae or "",
            "Created": r.created,
            "Updated": r.updated,
        }
        for r in records
    ]
    _print_rows(rows, as_csv, empty="no MPPS")


# --- commit ---------------------------------------------------------------------------------------


def _files(paths: Sequence[str], recursive: bool) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for child in sorted(path.rglob("*") if recursive else path.glob("*")):
                if child.is_file():
                    yield child
        else:
            yield path


@click.command(context_settings=CONTEXT_SETTINGS)
@_scu_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders of folders.")
@click.option(
    "--listen",
    "listen_port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also receive the report on a new association: listen on this port meanwhile (the "
    "SCP must know --aet at this host and port).",
)
@click.option(
    "--listen-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the --listen port (0.0.0.0 for every interface).",
)
def commit(
    host: str,
    port: int,
    aet: str,
    aec: str,
    timeout: float,
    verbose: int,
    security: ClientSecurity,
    paths: tuple[str, ...],
    recursive: bool,
    listen_port: int | None,
    listen_host: str,
) -> None:
    """Ask a peer to commit to storing the DICOM files PATHS (Storage Commitment Push Model)
    and print its answer for each: `committed` or `FAILED` with the reason.

    The report is awaited for --timeout seconds on this association, and with --listen also
    on a new association the SCP opens to us. Exit code 0 when every instance is committed, 1
    when one failed, the request was refused or no report came, 2 when the peer could not be
    reached."""
    from dicomnet.dataset import NotDicomError, read_file_info

    setup_logging(verbose, quiet=verbose == 0)
    refs: list[tuple[str, str]] = []
    where: dict[str, Path] = {}
    for path in _files(paths, recursive):
        try:
            info = read_file_info(path)
        except (NotDicomError, OSError) as exc:
            click.echo(f"skipped: {exc}", err=True)
            continue
        except Exception as exc:  # pydicom's errors on broken meta information
            click.echo(f"skipped: {path}: not readable as DICOM ({exc})", err=True)
            continue
        refs.append((info.sop_class_uid, info.sop_instance_uid))
        where[info.sop_instance_uid] = path
    if not refs:
        click.echo("nothing to commit: no DICOM file", err=True)
        sys.exit(1)

    async def go() -> int:
        from dicomnet.client import CommitmentError, CommitmentReports
        from dicomnet.errors import DicomTimeoutError
        from dicomnet.server import DicomServer

        reports = CommitmentReports()
        server = None
        if listen_port is not None:
            server = DicomServer(reports.listener(), listen_host, listen_port)
            await server.start()
            click.echo(
                f"listening for the report on {listen_host}:{server.port} as {aet}", err=True
            )
        start = time.perf_counter()
        try:
            async with _client(host, port, aet, aec, timeout, security) as client:
                report = await client.request_commitment(
                    refs, timeout=timeout, reports=reports if server is not None else None
                )
        except CommitmentError as exc:
            click.echo(f"error: {exc}", err=True)
            return 1
        except DicomTimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            return 1
        finally:
            if server is not None:
                await server.close(abort_after=5)
        return _print_report(report, where, time.perf_counter() - start)

    sys.exit(client_main(go))


def _print_report(report: CommitmentReport, where: dict[str, Path], elapsed: float) -> int:
    for _sop_class, uid in report.success:
        click.echo(f"committed  {where.get(uid, uid)}")
    for _sop_class, uid, reason in report.failure:
        why = FAILURE_REASONS.get(reason, "failure")
        click.echo(f"FAILED     {where.get(uid, uid)}: 0x{reason:04X} {why}")
    asked = set(where)
    answered = {uid for _c, uid in report.success} | {uid for _c, uid, _r in report.failure}
    for uid in sorted(asked - answered):
        click.echo(f"FAILED     {where[uid]}: not in the report")
    failed = len(report.failure) + len(asked - answered)
    click.echo(
        f"storage commitment {report.transaction_uid}: {len(report.success)} committed, "
        f"{failed} failed in {elapsed:.2f} s",
        err=True,
    )
    return 1 if failed else 0


COMMANDS = (worklist, mpps, commit)
