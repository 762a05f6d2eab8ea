"""``dicomnet web search|retrieve|store URL ...``: a DICOMweb client on the command line (QIDO-RS,
WADO-RS, STOW-RS), in the shape of ``dicomnet find``, ``get`` and ``store``.

Rules: options are parsed here and ``dicomnet.web.client.DicomWebClient`` does the work. URL is
the DICOMweb root (``http://host:8042/dicom-web``). Query keys are ``-k KEY=VALUE`` (match) or
``-k KEY`` (asked back with ``includefield``), KEY a keyword, ``gggg,eeee`` or ``ggggeeee``
(``.`` between keys for a sequence's attribute). Results go to stdout (a table, DICOM JSON or
CSV); progress and summaries go to stderr. Retrieve streams each instance of the multipart
answer into the folder; store streams the files as one multipart body per ``--batch`` files.
Exit code 0 when the operation succeeded; 1 when it failed (an HTTP error, an instance not
stored, a broken answer); 2 when the server could not be reached or refused us (401, 403).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import click
from pydicom.datadict import keyword_for_tag

from dicomnet.cli.common import CONTEXT_SETTINGS, run, scan_files, setup_logging
from dicomnet.query import parse_tag

#: Columns shown for each level when the command line does not ask for others first.
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "studies": (
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ),
    "series": (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ),
    "instances": (
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
    ),
}
#: Returned by every QIDO answer and of no use in a table: left to --json.
_NOT_SHOWN = {"00081190", "00080005", "00080056", "00080201"}
#: HTTP statuses that mean "not allowed to ask" (exit 2, as a rejected association).
_REFUSED = {401, 403, 407}


def _tag_key(text: str) -> tuple[str, str]:
    """(the QIDO key to send, its 8-hex tag path) for a keyword or tag, dotted for sequences."""
    sent: list[str] = []
    tags: list[str] = []
    for part in text.strip().split("."):
        tag = parse_tag(part)  # ValueError names an unknown keyword
        hexed = f"{int(tag):08X}"
        sent.append(keyword_for_tag(tag) or hexed)
        tags.append(hexed)
    return ".".join(sent), ".".join(tags)


def _parse_keys(keys: Sequence[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(match parameters, includefield values, column tags in command-line order)."""
    matches: list[tuple[str, str]] = []
    fields: list[str] = []
    columns: list[str] = []
    try:
        for key in keys:
            name, eq, value = key.partition("=")
            if not name.strip():
                raise ValueError(f"query key {key!r} has no attribute name")
            if name.strip().lower() == "all" and not eq:
                fields.append("all")
                continue
            sent, tags = _tag_key(name)
            if eq:
                matches.append((sent, value))
            else:
                fields.append(sent)
            if tags not in columns:
                columns.append(tags)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-k") from None
    return matches, fields, columns


def _text(element: Any) -> str:
    """A DICOM JSON attribute (PS3.18 §F.2) as one line of text."""
    if not isinstance(element, dict):
        return ""
    if "BulkDataURI" in element:
        return str(element["BulkDataURI"])
    if "InlineBinary" in element:
        return f"({len(str(element['InlineBinary'])) * 3 // 4} bytes)"
    values = element.get("Value")
    if not values:
        return ""
    if element.get("vr") == "SQ":
        return f"({len(values)} items)"
    out: list[str] = []
    for value in values:
        if isinstance(value, dict):  # PN: Alphabetic, Ideographic, Phonetic groups
            groups = [str(value.get(k, "")) for k in ("Alphabetic", "Ideographic", "Phonetic")]
            out.append("=".join(groups).rstrip("="))
        elif value is None:
            out.append("")
        else:
            out.append(str(value))
    return "\\".join(out)


def _header(tag: str) -> str:
    parts = []
    for part in tag.split("."):
        try:
            parts.append(keyword_for_tag(int(part, 16)) or f"{part[:4]},{part[4:]}")
        except ValueError:
            parts.append(part)
    return ".".join(parts)


def _columns(order: Sequence[str], matches: Sequence[dict[str, Any]], others: bool) -> list[str]:
    """The asked columns in order, then (``others``) any other attribute the server returned."""
    columns = [c for c in order if "." not in c]
    if not others:
        return columns
    seen = set(columns)
    for match in matches:
        for tag in match:
            if tag not in seen and tag not in _NOT_SHOWN:
                seen.add(tag)
                columns.append(tag)
    return columns


def _print_matches(
    order: Sequence[str],
    matches: list[dict[str, Any]],
    as_json: bool,
    as_csv: bool,
    others: bool,
) -> None:
    if as_json:
        click.echo(json.dumps(matches, indent=2, ensure_ascii=False))
        return
    columns = _columns(order, matches, others)
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([_header(t) for t in columns])
        for m in matches:
            writer.writerow([_text(m.get(t)) for t in columns])
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    for tag in columns:
        table.add_column(_header(tag), overflow="fold")
    for m in matches:
        table.add_row(*(escape(_text(m.get(t))) for t in columns))
    Console(width=None if sys.stdout.isatty() else 250).print(table)


def _web_main(go: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command's coroutine; the errors every command shares become a line and an exit code:
    unreachable or refused 2, another HTTP error 1, Ctrl-C 130."""
    import aiohttp

    from dicomnet.web.client import DicomWebError

    try:
        return int(run(go()))
    except DicomWebError as exc:
        click.echo(f"error: {exc}", err=True)
        _echo_failures(exc.answer)
        return 2 if exc.status in _REFUSED else 1
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        click.echo(f"error: cannot reach the server: {exc}", err=True)
        return 2
    except aiohttp.InvalidURL as exc:
        click.echo(f"error: not a URL: {exc}", err=True)
        return 2
    except (aiohttp.ClientError, TimeoutError) as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130


def _url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{url!r}: give the DICOMweb root, e.g. http://host:8042/dicom-web"
        )
    return url


def _client(url: str, timeout: float, headers: Sequence[str]) -> Any:
    try:
        from dicomnet.web.client import DicomWebClient
    except ImportError as exc:
        raise click.UsageError(
            f"dicomnet web needs the web extra ({exc}): pip install 'dicomnet[web]'"
        ) from None

    extra: dict[str, str] = {}
    for header in headers:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise click.BadParameter(f"{header!r} is not NAME: VALUE", param_hint="--header")
        extra[name.strip()] = value.strip()
    return DicomWebClient(_url(url), timeout=timeout, headers=extra)


def _shared(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of every web command (applied in reverse so --help lists them in order)."""
    options = [
        click.option(
            "--timeout",
            default=60.0,
            show_default=True,
            help="Seconds to wait for the connection and for each read.",
        ),
        click.option(
            "-H",
            "--header",
            "headers",
            multiple=True,
            metavar="'NAME: VALUE'",
            help="An HTTP header sent with every request (repeatable), e.g. Authorization.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Only the results and the summary."),
        click.option("-v", "--verbose", count=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings=CONTEXT_SETTINGS)
def web() -> None:
    """DICOMweb client: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS) against any
    DICOMweb server (`dicomnet serve`'s at http://HOST:8042/dicom-web, Orthanc's, a cloud
    archive's).

    Exit code: 0 when the operation succeeded, 1 when it failed (HTTP error, an instance not
    stored), 2 when the server could not be reached or refused the request (401/403).
    """


# --- search ---------------------------------------------------------------------------------------


@web.command()
@click.argument("url")
@click.option(
    "-L",
    "--level",
    type=click.Choice(["studies", "series", "instances"], case_sensitive=False),
    default="studies",
    show_default=True,
    help="What to search for.",
)
@click.option("--study", default=None, help="Within this study (series and instances).")
@click.option("--series", default=None, help="Within this series (instances).")
@click.option(
    "-k",
    "--key",
    "keys",
    multiple=True,
    metavar="KEY[=VALUE]",
    help="Match KEY=VALUE, or ask for KEY back (includefield); `-k all` asks for every "
    "attribute (repeatable).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many results.")
@click.option("--offset", type=click.IntRange(0), default=None, help="Skip this many results.")
@click.option("--fuzzy", is_flag=True, help="Ask for fuzzy matching of person names.")
@click.option("--json", "as_json", is_flag=True, help="Print the matches as DICOM JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the matches as CSV.")
@click.option(
    "--no-default-keys",
    is_flag=True,
    help="Instead of the level's usual columns, the -k keys then whatever the server returns.",
)
@_shared
def search(
    url: str,
    level: str,
    study: str | None,
    series: str | None,
    keys: tuple[str, ...],
    limit: int | None,
    offset: int | None,
    fuzzy: bool,
    as_json: bool,
    as_csv: bool,
    no_default_keys: bool,
    timeout: float,
    headers: tuple[str, ...],
    quiet: bool,
    verbose: int,
) -> None:
    """Search with QIDO-RS and print the matches.

    For example ``dicomnet web search http://pacs:8042/dicom-web -k PatientName=SMITH* -k
    StudyDate=20240101-`` prints a table of the matching studies; ``-L series --study UID``
    the series of a study."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    setup_logging(verbose, quiet=verbose == 0)
    level = level.lower()
    filters, fields, columns = _parse_keys(keys)
    if not no_default_keys:
        for keyword in DEFAULT_KEYS[level]:
            tag = f"{int(parse_tag(keyword)):08X}"
            if tag not in columns:
                columns.append(tag)
                fields.append(keyword)
    client = _client(url, timeout, headers)

    async def go() -> int:
        start = time.perf_counter()
        async with client:
            matches = await client.search(
                level,
                study=study,
                series=series,
                filters=filters,
                fields=fields,
                limit=limit,
                offset=offset,
                fuzzy=True if fuzzy else None,
            )
            warnings = client.warnings
        elapsed = time.perf_counter() - start
        _print_matches(columns, matches, as_json, as_csv, no_default_keys or "all" in fields)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        if not quiet:
            click.echo(
                f"{len(matches)} match{'es' if len(matches) != 1 else ''} in {elapsed:.3f} s",
                err=True,
            )
        return 0

    sys.exit(_web_main(go))


# --- retrieve -------------------------------------------------------------------------------------


@web.command()
@click.argument("url")
@click.argument("study")
@click.argument("series", required=False)
@click.argument("instance", required=False)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to save the instances into, as <SOPInstanceUID>.dcm.",
)
@click.option(
    "--transfer-syntax",
    default="*",
    show_default=True,
    help="Transfer syntax UID to ask for; '*' as stored; 'default' the server's default "
    "(Explicit VR Little Endian).",
)
@_shared
def retrieve(
    url: str,
    study: str,
    series: str | None,
    instance: str | None,
    out_dir: str,
    transfer_syntax: str,
    timeout: float,
    headers: tuple[str, ...],
    quiet: bool,
    verbose: int,
) -> None:
    """Retrieve a study, a series or an instance with WADO-RS into a folder.

    For example ``dicomnet web retrieve http://pacs:8042/dicom-web 1.2.3 --out study``. The
    multipart answer is streamed: each instance is written to a temporary file and renamed
    when complete, so a broken answer leaves no partial file."""
    setup_logging(verbose, quiet=verbose == 0)
    syntax = None if transfer_syntax == "default" else transfer_syntax
    client = _client(url, timeout, headers)
    out = Path(out_dir)
    interactive = sys.stderr.isatty() and not quiet
    total = [0, 0]

    def saved(path: Path) -> None:
        total[0] += 1
        total[1] += path.stat().st_size
        if not interactive and not quiet:
            click.echo(f"saved: {path}", err=True)
        elif interactive:
            click.echo(f"\rretrieved {total[0]} ({total[1] / 1e6:.1f} MB)", nl=False, err=True)

    async def go() -> int:
        start = time.perf_counter()
        try:
            async with client:
                await client.retrieve(out, study, series, instance, transfer_syntax=syntax,
                                      on_saved=saved)  # fmt: skip
        except ValueError as exc:  # a UID that is not one
            raise click.BadParameter(str(exc)) from None
        finally:
            if interactive and total[0]:
                click.echo("", err=True)
        elapsed = max(time.perf_counter() - start, 1e-9)
        click.echo(
            f"retrieved {total[0]} instance{'s' if total[0] != 1 else ''} "
            f"({total[1] / 1e6:.1f} MB) in {elapsed:.2f} s ({total[0] / elapsed:.1f} "
            f"instances/s) into {out}",
            err=True,
        )
        return 0 if total[0] else 1

    sys.exit(_web_main(go))


# --- store ----------------------------------------------------------------------------------------


def _failures(answer: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(SOP Instance UID, FailureReason) of each item of a STOW answer's FailedSOPSequence."""
    if not answer:
        return []
    items = (answer.get("00081198") or {}).get("Value") or []
    out = []
    for item in items:
        uid = _text(item.get("00081155")) if isinstance(item, dict) else ""
        reason = _text(item.get("00081197")) if isinstance(item, dict) else ""
        if reason.isdigit():
            reason = f"0x{int(reason):04X}"
        out.append((uid or "?", reason or "?"))
    return out


def _echo_failures(answer: dict[str, Any] | None) -> None:
    for uid, reason in _failures(answer):
        click.echo(f"failed: {uid}: FailureReason {reason}", err=True)


def _stored(answer: dict[str, Any] | None) -> int:
    if not answer:
        return 0
    return len((answer.get("00081199") or {}).get("Value") or [])


@web.command()
@click.argument("url")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders of folders.")
@click.option("--study", default=None, help="Store into this study (POST /studies/{study}).")
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Files per request (each request is one streamed multipart body).",
)
@_shared
def store(
    url: str,
    paths: tuple[str, ...],
    recursive: bool,
    study: str | None,
    batch: int,
    timeout: float,
    headers: tuple[str, ...],
    quiet: bool,
    verbose: int,
) -> None:
    """Store DICOM files and folders with STOW-RS.

    For example ``dicomnet web store http://pacs:8042/dicom-web scans/ -r``. Files that are
    not DICOM are reported and skipped; the others are streamed from disk, never held in
    memory, --batch files per request."""
    from dicomnet.web.client import DicomWebError

    setup_logging(verbose, quiet=verbose == 0)
    files, skipped = scan_files(paths, recursive)
    for _path, why in skipped:
        click.echo(f"skipped: {why}", err=True)
    if not files:
        click.echo(f"nothing to send: no DICOM file among {len(skipped)} files", err=True)
        sys.exit(1)
    client = _client(url, timeout, headers)
    total_bytes = sum(f.size for f in files)

    async def go() -> int:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        stored = 0
        failed: list[tuple[str, str]] = []
        start = time.perf_counter()
        bar = Progress(
            TextColumn("[bold]store[/]"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            disable=quiet or not sys.stderr.isatty(),
        )
        async with client:
            with bar:
                task = bar.add_task("store", total=total_bytes)
                for first in range(0, len(files), batch):
                    chunk = files[first : first + batch]
                    try:
                        answer = await client.store(
                            [f.path for f in chunk],
                            study=study,
                            progress=lambda n: bar.update(task, advance=n),
                        )
                    except DicomWebError as exc:
                        if exc.status in _REFUSED or exc.answer is None:
                            raise
                        answer = exc.answer
                    except ValueError as exc:  # --study is not a UID
                        raise click.BadParameter(str(exc), param_hint="--study") from None
                    stored += _stored(answer)
                    failed += _failures(answer)
                    for warning in client.warnings:
                        click.echo(f"warning: {warning}", err=True)
        elapsed = max(time.perf_counter() - start, 1e-9)
        mb = total_bytes / 1e6
        click.echo(
            f"stored {stored} of {len(files)} files ({mb:.1f} MB) in {elapsed:.2f} s "
            f"({len(files) / elapsed:.1f} files/s, {mb / elapsed:.1f} MB/s); "
            f"{len(failed)} failed, {len(skipped)} skipped (not DICOM)",
            err=True,
        )
        for uid, reason in failed:
            click.echo(f"failed: {uid}: FailureReason {reason}", err=True)
        return 0 if stored == len(files) and not failed else 1

    sys.exit(_web_main(go))


COMMANDS = (web,)
