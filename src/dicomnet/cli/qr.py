"""``dicomnet find``, ``dicomnet move`` and ``dicomnet get``: query/retrieve from the command line
(DCMTK's findscu, movescu and getscu in the shape of ``dicomnet store``).

Rules: options are parsed here and the library does the work (``DicomClient.c_find/c_move/
c_get``, ``build_query``, ``parse_keys``). Query keys are ``-k KEY=VALUE`` (match) or ``-k KEY``
(return key), KEY a keyword or ``gggg,eeee``. Results go to stdout (a table, DICOM JSON or
CSV); progress and summaries go to stderr. The first Ctrl-C sends C-CANCEL, the second aborts.
Exit code 0 only when the operation succeeded with no failed sub-operations; 1 for a failure
or warning status, a cancel or failed sub-operations; 2 when the peer could not be reached or
the association failed.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from pydicom import Dataset
from pydicom.datadict import keyword_for_tag

from dicomnet.cli.common import CONTEXT_SETTINGS, client_main, setup_logging
from dicomnet.cli.security import ClientSecurity, client_security_options
from dicomnet.client import (
    DicomClient,
    QueryRetrieveError,
    QueryRetrieveResponses,
    RetrieveProgress,
    build_query,
    parse_keys,
    parse_tag,
)
from dicomnet.dimse.status import StatusCategory, category, describe
from dicomnet.sinks import close_temp_pools, remove_temp_files

#: Return keys added for each level when the command line does not name them.
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": (
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "StudyInstanceUID",
    ),
    "SERIES": (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
    ),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber"),
}

_T = TypeVar("_T")


def _common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by find, move and get (applied in reverse so --help lists them in order)."""
    options = [
        click.argument("host"),
        click.argument("port", type=click.IntRange(1, 65535)),
        click.option(
            "-k",
            "--key",
            "keys",
            multiple=True,
            metavar="KEY[=VALUE]",
            help="Query key by keyword or gggg,eeee; without '=' a return key (repeatable).",
        ),
        click.option(
            "-L",
            "--level",
            type=click.Choice(["PATIENT", "STUDY", "SERIES", "IMAGE"], case_sensitive=False),
            default="STUDY",
            show_default=True,
            help="Query/Retrieve Level.",
        ),
        click.option(
            "-P",
            "--patient-root",
            "model",
            flag_value="patient",
            help="Patient Root information model.",
        ),
        click.option(
            "-S",
            "--study-root",
            "model",
            flag_value="study",
            default=True,
            help="Study Root information model (default).",
        ),
        click.option(
            "-O",
            "--patient-study-only",
            "model",
            flag_value="patient-study",
            help="Patient/Study Only information model (retired).",
        ),
        click.option("--model-uid", default=None, help="Any other model: its SOP class UID."),
        click.option(
            "--aet", default="DICOMNET", show_default=True, help="Our (calling) AE title."
        ),
        click.option(
            "--aec", default="ANY-SCP", show_default=True, help="The peer's (called) AE title."
        ),
        click.option(
            "--timeout",
            default=60.0,
            show_default=True,
            help="Seconds to wait for the connection and for each response.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Only the results and the summary."),
        click.option("-v", "--verbose", count=True),
    ]
    func = client_security_options(func)  # the TLS and --user options, as ``security``
    for option in reversed(options):
        func = option(func)
    return func


def _query(keys: Sequence[str], level: str, defaults: bool) -> tuple[Dataset, list[int]]:
    """The identifier, and its keys' tags in command-line order (then the default keys)."""
    try:
        parsed: dict[str, Any] = parse_keys(keys)
        order = [int(parse_tag(k)) for k in parsed]
        if defaults:
            for keyword in DEFAULT_KEYS[level.upper()]:
                tag = int(parse_tag(keyword))
                if tag not in order:
                    parsed[keyword] = None
                    order.append(tag)
        return build_query(parsed, level), order
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-k") from None


def _client(
    host: str, port: int, aet: str, aec: str, timeout: float, security: ClientSecurity
) -> DicomClient:
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


async def _with_cancel_on_sigint(responses: QueryRetrieveResponses[_T]) -> Callable[[], None]:
    """First Ctrl-C: C-CANCEL; second: back to the default (KeyboardInterrupt). Returns the
    function that removes the handler."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_sigint() -> None:
        click.echo("cancelling (Ctrl-C again to abort)", err=True)
        loop.remove_signal_handler(signal.SIGINT)
        task = loop.create_task(responses.cancel())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, no signals
        return lambda: None
    return restore


# --- find ----------------------------------------------------------------------------------------


def _text(ds: Dataset, tag: int) -> str:
    if tag not in ds:
        return ""
    value = ds[tag].value
    if value is None:
        return ""
    if ds[tag].VR == "SQ":
        return f"({len(value)} items)"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return f"({len(value)} bytes)"
    return str(value)


def _columns(keys: Sequence[int], matches: Sequence[Dataset]) -> list[int]:
    """The query's keys in command-line order, then any other attribute a peer returned."""
    order = list(keys)
    seen = set(order)
    for match in matches:
        for elem in match:
            tag = int(elem.tag)
            if tag not in seen and elem.keyword not in (
                "QueryRetrieveLevel",
                "SpecificCharacterSet",
                "RetrieveAETitle",
            ):
                seen.add(tag)
                order.append(tag)
    return order


def _header(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag >> 16:04X},{tag & 0xFFFF:04X}"


@click.command(context_settings=CONTEXT_SETTINGS)
@_common_options
@click.option("--json", "as_json", is_flag=True, help="Print the matches in the DICOM JSON model.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the matches as CSV.")
@click.option(
    "--no-default-keys",
    is_flag=True,
    help="Ask only for the -k keys (by default the level's usual keys are added).",
)
def find(
    host: str,
    port: int,
    keys: tuple[str, ...],
    level: str,
    model: str,
    model_uid: str | None,
    aet: str,
    aec: str,
    timeout: float,
    quiet: bool,
    verbose: int,
    security: ClientSecurity,
    as_json: bool,
    as_csv: bool,
    no_default_keys: bool,
) -> None:
    """Query a peer with C-FIND and print the matches.

    For example ``dicomnet find pacs 104 --aec PACS -L STUDY -k PatientName=SMITH* -k
    StudyDate=20240101-`` prints a table of the matching studies."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    setup_logging(verbose, quiet=verbose == 0)
    query, order = _query(keys, level, not no_default_keys)

    async def go() -> int:
        matches: list[Dataset] = []
        start = time.perf_counter()
        status: int | None = None
        async with _client(host, port, aet, aec, timeout, security) as client:
            responses = client.c_find(query, model_uid or model)
            restore = await _with_cancel_on_sigint(responses)
            try:
                async for match in responses:
                    matches.append(match)
            except QueryRetrieveError as exc:
                click.echo(f"error: {exc}", err=True)
                return 1
            finally:
                restore()
                await responses.aclose()
            status = responses.final_status
        elapsed = time.perf_counter() - start
        _print_matches(order, matches, as_json, as_csv)
        if not quiet or status != 0:
            click.echo(
                f"{len(matches)} match{'es' if len(matches) != 1 else ''} in {elapsed:.3f} s; "
                f"final status {describe(status if status is not None else 0xFFFF)}",
                err=True,
            )
        return 0 if status == 0 else 1

    sys.exit(client_main(go))


def _print_matches(
    keys: Sequence[int], matches: list[Dataset], as_json: bool, as_csv: bool
) -> None:
    if as_json:
        click.echo(json.dumps([m.to_json_dict() for m in matches], indent=2))
        return
    columns = _columns(keys, matches)
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([_header(t) for t in columns])
        for m in matches:
            writer.writerow([_text(m, t) for t in columns])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    for tag in columns:
        table.add_column(_header(tag), overflow="fold")
    for m in matches:
        table.add_row(*(_text(m, t) for t in columns))
    Console(width=None if sys.stdout.isatty() else 250).print(table)


# --- move and get -----------------------------------------------------------------------------------


def _summary(
    operation: str, progress: RetrieveProgress | None, elapsed: float, extra: str = ""
) -> str:
    if progress is None:
        return f"{operation}: no final response"
    rate = progress.completed / elapsed if elapsed > 0 else 0.0
    text = (
        f"{operation}: {describe(progress.status)}; {progress.completed} completed, "
        f"{progress.failed} failed, {progress.warning} warning in {elapsed:.2f} s "
        f"({rate:.1f} instances/s)"
    )
    if progress.error_comment:
        text += f"; {progress.error_comment}"
    return text + extra


async def _retrieve(
    operation: str,
    responses: QueryRetrieveResponses[RetrieveProgress],
    quiet: bool,
) -> tuple[RetrieveProgress | None, int]:
    """Iterate a C-MOVE/C-GET with a progress bar (or a line per response when stderr is not a
    terminal); returns the last progress and the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    interactive = console.is_terminal and not quiet
    last: RetrieveProgress | None = None
    bar = Progress(
        TextColumn(f"[bold]{operation}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        disable=not interactive,
    )
    restore = await _with_cancel_on_sigint(responses)
    try:
        with bar:
            task = bar.add_task(operation, total=None, detail="")
            async for progress in responses:
                last = progress
                if progress.remaining is not None:
                    bar.update(task, total=progress.done + progress.remaining)
                bar.update(
                    task,
                    completed=progress.done,
                    detail=f"{progress.failed} failed, {progress.warning} warning",
                )
                if not interactive and not quiet and not progress.final:
                    click.echo(
                        f"{operation}: {progress.remaining} remaining, {progress.completed} "
                        f"completed, {progress.failed} failed, {progress.warning} warning",
                        err=True,
                    )
    except QueryRetrieveError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.progress, 1
    finally:
        restore()
        await responses.aclose()
    if last is None:
        return None, 1
    ok = category(last.status) is StatusCategory.SUCCESS and last.failed == 0
    for uid in last.failed_instances:
        click.echo(f"failed: {uid}", err=True)
    return last, 0 if ok else 1


@click.command(context_settings=CONTEXT_SETTINGS)
@_common_options
@click.option(
    "--dest",
    default=None,
    help="Move destination AE title (the peer must know it). [default: --aet with --listen]",
)
@click.option(
    "--listen",
    "listen_port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Receive the instances ourselves: run a storage SCP on this port meanwhile.",
)
@click.option(
    "--listen-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the --listen storage SCP (0.0.0.0 for every interface).",
)
@click.option(
    "--out",
    "out_dir",
    default="dicom-received",
    show_default=True,
    type=click.Path(file_okay=False),
    help="With --listen: the folder to store into (Study/Series/SOP layout).",
)
def move(
    host: str,
    port: int,
    keys: tuple[str, ...],
    level: str,
    model: str,
    model_uid: str | None,
    aet: str,
    aec: str,
    timeout: float,
    quiet: bool,
    verbose: int,
    security: ClientSecurity,
    dest: str | None,
    listen_port: int | None,
    listen_host: str,
    out_dir: str,
) -> None:
    """Have a peer send the matching instances to an AE with C-MOVE.

    For example ``dicomnet move pacs 104 --aec PACS --dest WORKSTATION -k
    StudyInstanceUID=1.2.3``. With ``--listen PORT`` this command receives them itself, as
    ``--aet``, which the peer must know at this host and port."""
    setup_logging(verbose, quiet=verbose == 0)
    destination = dest or (aet if listen_port is not None else None)
    if not destination:
        raise click.UsageError("give --dest AE (or --listen PORT to receive as --aet)")
    query, _order = _query(keys, level, False)

    async def go() -> int:
        from dicomnet.server import DicomServer
        from dicomnet.services.storage import StorageService

        received: list[Path] = []
        server: DicomServer | None = None
        if listen_port is not None:
            factory = StorageService.factory(
                Path(out_dir), fsync=False, on_stored=lambda _rq, path: received.append(path)
            )
            server = DicomServer(factory, listen_host, listen_port)
            await server.start()
            if not quiet:
                click.echo(
                    f"receiving on {listen_host}:{server.port} as {aet} into {out_dir}", err=True
                )
        try:
            start = time.perf_counter()
            async with _client(host, port, aet, aec, timeout, security) as client:
                responses = client.c_move(query, destination, model_uid or model)
                last, code = await _retrieve("C-MOVE", responses, quiet)
            elapsed = time.perf_counter() - start
        finally:
            if server is not None:
                await server.close(abort_after=timeout)
        extra = f"; received {len(received)} into {out_dir}" if server is not None else ""
        click.echo(_summary("C-MOVE", last, elapsed, extra), err=True)
        if server is not None and last is not None and len(received) < last.completed:
            code = 1
        return code

    sys.exit(client_main(go))


@click.command(context_settings=CONTEXT_SETTINGS)
@_common_options
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to save the instances into, as <SOPInstanceUID>.dcm.",
)
def get(
    host: str,
    port: int,
    keys: tuple[str, ...],
    level: str,
    model: str,
    model_uid: str | None,
    aet: str,
    aec: str,
    timeout: float,
    quiet: bool,
    verbose: int,
    security: ClientSecurity,
    out_dir: str,
) -> None:
    """Retrieve the matching instances with C-GET into a folder.

    For example ``dicomnet get pacs 104 --aec PACS -k StudyInstanceUID=1.2.3 --out study``."""
    setup_logging(verbose, quiet=verbose == 0)
    query, _order = _query(keys, level, False)
    out = Path(out_dir)

    async def go() -> int:
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        async with _client(host, port, aet, aec, timeout, security) as client:
            # Temporary files next to the output folder, so that saving one is a rename.
            responses = client.c_get(
                query, out_dir=out, temp_dir=out / ".dicomnet-incoming", model=model_uid or model
            )
            last, code = await _retrieve("C-GET", responses, quiet)
        elapsed = time.perf_counter() - start
        click.echo(_summary("C-GET", last, elapsed, f"; saved into {out}"), err=True)
        return code

    try:
        sys.exit(client_main(go))
    finally:
        close_temp_pools()  # the empty files created ahead, and this process's folder
        remove_temp_files(out / ".dicomnet-incoming")


COMMANDS = (find, move, get)
