"""A DICOMweb client on aiohttp: QIDO-RS search, WADO-RS retrieve into a folder, STOW-RS of files,
for ``dicomnet web search|retrieve|store`` and for library users.

One job: speak PS3.18 to any DICOMweb server (dicomnet's, Orthanc's, a cloud archive's) without
holding instances in memory. Rules: a retrieve streams the multipart answer part by part into
temporary files in the destination folder, renamed ``<SOPInstanceUID>.dcm`` once complete (a
broken answer leaves no partial file); a store streams the files as one multipart/related body
(chunked, never all in memory); a status other than success raises ``DicomWebError`` with the
server's reason (and its DICOM JSON answer when it sent one: a STOW 409 names each failed
instance); 202 (some stored) returns the answer for the caller to inspect. The ``Warning``
headers of the last answer are kept in ``warnings`` (QIDO: "there are more results").
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from dicomnet.dataset import NotDicomError, read_file_info
from dicomnet.errors import DicomNetError
from dicomnet.uids import is_valid_uid
from dicomnet.web.media import DICOM_JSON, parse_media_type
from dicomnet.web.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from,
    new_boundary,
)

__all__ = ["DicomWebClient", "DicomWebError"]

_CHUNK = 1 << 20


class DicomWebError(DicomNetError):
    """A DICOMweb request that did not succeed: the HTTP status and the server's reason."""

    def __init__(
        self, status: int, reason: str, url: str, answer: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{url}: HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.url = url
        #: The server's DICOM JSON answer, when it sent one (a STOW-RS 409 or 4xx).
        self.answer = answer


def _path(*uids: str | None) -> str:
    names = ("studies", "series", "instances")
    out = ""
    for name, uid in zip(names, uids, strict=False):
        if uid is None:
            break
        if not is_valid_uid(uid):
            raise ValueError(f"{uid!r} is not a valid UID")
        out += f"/{name}/{uid}"
    return out


class DicomWebClient:
    """``async with DicomWebClient("http://host:8042/dicom-web") as web: ...``"""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._own = session is None
        self._session = session
        self._headers = dict(headers or {})
        self._timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout, sock_connect=timeout)
        #: The Warning header values of the last answer.
        self.warnings: list[str] = []

    async def __aenter__(self) -> DicomWebClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.close()

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client in 'async with' (or pass a session)")
        return self._session

    async def _check(self, response: aiohttp.ClientResponse) -> None:
        self.warnings = response.headers.getall("Warning", [])
        if response.status in (200, 202, 204, 206):
            return
        text = (await response.text(errors="replace"))[:500].strip()
        raise DicomWebError(response.status, text or response.reason or "", str(response.url))

    # --- QIDO-RS

    async def search(
        self,
        level: str = "studies",
        *,
        study: str | None = None,
        series: str | None = None,
        filters: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        fields: Sequence[str] = (),
        limit: int | None = None,
        offset: int | None = None,
        fuzzy: bool | None = None,
    ) -> list[dict[str, Any]]:
        """QIDO-RS at ``level`` (studies, series, instances), under ``study``/``series`` when
        given; ``filters`` are keyword or tag keys with their match values (a mapping, or
        pairs when a key repeats)."""
        if level not in ("studies", "series", "instances"):
            raise ValueError(f"level {level!r}: studies, series or instances")
        pairs = filters.items() if isinstance(filters, Mapping) else filters or ()
        params: list[tuple[str, str]] = [(str(k), str(v)) for k, v in pairs]
        params += [("includefield", f) for f in fields]
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset is not None:
            params.append(("offset", str(offset)))
        if fuzzy is not None:
            params.append(("fuzzymatching", "true" if fuzzy else "false"))
        if level == "studies":
            url = self.url + "/studies"
            if study is not None:
                params.append(("StudyInstanceUID", study))
        elif level == "series":
            url = self.url + _path(study) + "/series"
            if series is not None:
                params.append(("SeriesInstanceUID", series))
        else:
            url = self.url + _path(study, series if study else None) + "/instances"
            if series is not None and study is None:
                params.append(("SeriesInstanceUID", series))
        async with self.session.get(url, params=params, headers={"Accept": DICOM_JSON}) as r:
            await self._check(r)
            if r.status == 204:
                return []
            result: list[dict[str, Any]] = await r.json(content_type=None)
            return result

    # --- WADO-RS

    async def metadata(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[dict[str, Any]]:
        url = self.url + _path(study, series, instance) + "/metadata"
        async with self.session.get(url, headers={"Accept": DICOM_JSON}) as r:
            await self._check(r)
            result: list[dict[str, Any]] = await r.json(content_type=None)
            return result

    async def retrieve(
        self,
        folder: str | os.PathLike[str],
        study: str,
        series: str | None = None,
        instance: str | None = None,
        *,
        transfer_syntax: str | None = "*",
        on_saved: Callable[[Path], None] | None = None,
    ) -> list[Path]:
        """Retrieve a study, series or instance into ``folder`` as ``<SOPInstanceUID>.dcm``
        files; ``transfer_syntax`` None asks for the server's default (Explicit VR LE).
        ``on_saved`` is called with each file as soon as it is complete."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        accept = 'multipart/related; type="application/dicom"'
        if transfer_syntax is not None:
            accept += f"; transfer-syntax={transfer_syntax}"
        url = self.url + _path(study, series, instance)
        saved: list[Path] = []
        async with self.session.get(url, headers={"Accept": accept}) as r:
            await self._check(r)
            media = parse_media_type(r.headers.get("Content-Type", ""))
            if media is None or media.type != "multipart/related":
                saved.append(await _save_single(r, target))
                if on_saved is not None:
                    on_saved(saved[-1])
                return saved
            parser = MultipartParser(boundary_from(media.params), max_parts=1_000_000)
            writer = _PartWriter(target)
            try:
                async for chunk in r.content.iter_chunked(_CHUNK):
                    for event in parser.feed(chunk):
                        done = writer.handle(event)
                        if done is not None:
                            saved.append(done)
                            if on_saved is not None:
                                on_saved(done)
                    if parser.done:
                        break
                parser.close()
            except (MultipartError, aiohttp.ClientPayloadError) as exc:
                writer.discard()
                raise DicomWebError(r.status, f"broken multipart answer: {exc}", url) from None
        return saved

    # --- STOW-RS

    async def store(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        study: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """STOW-RS of Part 10 files in one streamed request; returns the server's answer
        (DicomWebError when nothing was stored). ``progress`` is called with the number of
        bytes of each chunk as it is handed to the connection."""
        files = [Path(p) for p in paths]
        if not files:
            raise ValueError("no file to store")
        boundary = new_boundary()
        url = self.url + "/studies" + (f"/{study}" if study else "")
        if study is not None and not is_valid_uid(study):
            raise ValueError(f"{study!r} is not a valid UID")
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": DICOM_JSON,
        }
        body = _body(files, boundary, progress)
        async with self.session.post(url, data=body, headers=headers) as r:
            if r.status >= 400 and _is_json(r):
                failed = await _json_or_none(r)
                why = "no instance was stored" if r.status == 409 else r.reason or ""
                self.warnings = r.headers.getall("Warning", [])
                raise DicomWebError(r.status, why, url, failed)
            await self._check(r)
            answer: dict[str, Any] = await r.json(content_type=None)
            return answer


def _is_json(response: aiohttp.ClientResponse) -> bool:
    media = parse_media_type(response.headers.get("Content-Type", ""))
    return media is not None and media.type in (DICOM_JSON, "application/json")


async def _json_or_none(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    try:
        answer = await response.json(content_type=None)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


async def _body(
    files: list[Path], boundary: str, progress: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    for n, path in enumerate(files):
        yield (
            ("\r\n" if n else "") + f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
        ).encode()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
                if progress is not None:
                    progress(len(chunk))
    yield f"\r\n--{boundary}--\r\n".encode()


class _PartWriter:
    """Writes each part of a retrieve answer to a temporary file in the folder, renamed to
    ``<SOPInstanceUID>.dcm`` when the part is complete."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._file: Any = None
        self._temp: Path | None = None

    def handle(self, event: PartStart | PartData | PartEnd) -> Path | None:
        if isinstance(event, PartStart):
            self._temp = self.folder / f".dicomnet-{secrets.token_hex(8)}.part"
            self._file = open(self._temp, "wb")  # noqa: SIM115 (closed at PartEnd or discard)
        elif isinstance(event, PartData):
            if self._file is not None:
                self._file.write(event.data)
        elif self._file is not None and self._temp is not None:
            self._file.close()
            self._file = None
            temp, self._temp = self._temp, None
            return _name(temp, self.folder)
        return None

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


def _name(temp: Path, folder: Path) -> Path:
    try:
        uid = read_file_info(temp).sop_instance_uid
    except (NotDicomError, OSError):
        uid = ""
    if not is_valid_uid(uid):
        uid = temp.stem.lstrip(".")
    final = folder / f"{uid}.dcm"
    os.replace(temp, final)
    return final


async def _save_single(response: aiohttp.ClientResponse, folder: Path) -> Path:
    temp = folder / f".dicomnet-{secrets.token_hex(8)}.part"
    try:
        with open(temp, "wb") as f:
            async for chunk in response.content.iter_chunked(_CHUNK):
                f.write(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return _name(temp, folder)
