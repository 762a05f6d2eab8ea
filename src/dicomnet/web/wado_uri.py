"""WADO-URI (PS3.18 §9): ``/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

One job: map the URI parameters onto the WADO-RS machinery: ``contentType=application/dicom``
sends the instance (``transferSyntax`` as asked, Explicit VR Little Endian by default, ``*`` as
stored), ``image/jpeg`` (the default) or ``image/png`` renders ``frameNumber`` (default 1) with
``rows``/``columns`` as the viewport, ``windowCenter``/``windowWidth`` and ``imageQuality``.
Parameters are percent-decoded once (``contentType=application%2Fdicom`` works; Orthanc 1.7
refuses it); UIDs are checked; a parameter given twice is 400; an instance that is not under the
given study and series is 404.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from dicomnet.archive.index import InstanceRecord
from dicomnet.uids import is_valid_uid
from dicomnet.web.common import HTTPProblem, archive_of, cut_short, decorate, query_pairs
from dicomnet.web.media import EXPLICIT_VR_LE, parse_media_type
from dicomnet.web.render import RenderOptions, rendered_response
from dicomnet.web.transcode import can_convert, convert_file
from dicomnet.web.wado import read_chunks, stored_syntax

__all__ = ["add_routes"]

_SINGLE = (
    "requestType",
    "studyUID",
    "seriesUID",
    "objectUID",
    "contentType",
    "transferSyntax",
    "frameNumber",
    "rows",
    "columns",
    "windowCenter",
    "windowWidth",
    "imageQuality",
)


def _number(values: dict[str, str], name: str, low: float, high: float) -> float | None:
    text = values.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise HTTPProblem(400, f"{name}={text[:30]!r} is not a number") from None
    if not low <= value <= high:
        raise HTTPProblem(400, f"{name} must be {low:g} to {high:g}")
    return value


async def _wado(request: web.Request) -> web.StreamResponse:
    archive = archive_of(request)
    values: dict[str, str] = {}
    for key, value in query_pairs(request):
        if key in values and key in _SINGLE:
            raise HTTPProblem(400, f"{key} is given more than once")
        values[key] = value
    if values.get("requestType") != "WADO":
        raise HTTPProblem(400, "requestType=WADO is required (PS3.18 §9.1.2)")
    uids = {}
    for name in ("studyUID", "seriesUID", "objectUID"):
        uid = values.get(name, "")
        if not is_valid_uid(uid):
            raise HTTPProblem(400, f"{name}={uid[:80]!r} is not a valid UID")
        uids[name] = uid
    query = {
        "StudyInstanceUID": ("UI", uids["studyUID"]),
        "SeriesInstanceUID": ("UI", uids["seriesUID"]),
        "SOPInstanceUID": ("UI", uids["objectUID"]),
    }
    records = await archive.records("IMAGE", query)
    if not records:
        raise HTTPProblem(404, "no such instance in this archive")
    record = records[0]
    content_types = [t.strip() for t in values.get("contentType", "image/jpeg").split(",")]
    for content_type in content_types:
        media = parse_media_type(content_type or "image/jpeg")
        if media is None:
            continue
        if media.type == "application/dicom":
            return await _instance(request, record, values.get("transferSyntax") or EXPLICIT_VR_LE)
        if media.type in ("image/jpeg", "image/png", "image/*", "*/*"):
            return await _image(request, record, values, media.type)
    raise HTTPProblem(406, f"contentType {values.get('contentType', '')[:80]!r} is not served")


async def _instance(
    request: web.Request, record: InstanceRecord, target: str
) -> web.StreamResponse:
    archive = archive_of(request)
    if target != "*" and not is_valid_uid(target):
        raise HTTPProblem(400, f"transferSyntax={target[:80]!r} is not a UID")
    try:
        path, stored = await asyncio.to_thread(stored_syntax, archive, record)
    except OSError:
        raise HTTPProblem(404, "the file of this instance is missing") from None
    target = stored if target == "*" else target
    if not can_convert(stored, target):
        raise HTTPProblem(406, f"the instance is stored in {stored}; {target} cannot be made")
    headers = {"Content-Type": "application/dicom"}
    if target != stored:
        data = await asyncio.to_thread(convert_file, path, stored, target)
        return web.Response(body=data, headers=headers)
    response = web.StreamResponse(headers=headers)
    decorate(request, response)
    await response.prepare(request)
    try:
        async for chunk in read_chunks(path):
            await response.write(chunk)
    except Exception as exc:  # the status is sent: close rather than look complete
        cut_short(request, exc)
        return response
    await response.write_eof()
    return response


async def _image(request: web.Request, record: InstanceRecord, values: dict[str, str],
                 media_type: str) -> web.StreamResponse:  # fmt: skip
    config = archive_of(request).config
    side = config.max_render_side
    rows = _number(values, "rows", 1, side)
    columns = _number(values, "columns", 1, side)
    viewport = None
    if rows is not None or columns is not None:
        viewport = (int(columns or rows or side), int(rows or columns or side))
    center = _number(values, "windowCenter", -1e9, 1e9)
    width = _number(values, "windowWidth", 1e-9, 1e9)
    if (center is None) != (width is None):
        raise HTTPProblem(400, "windowCenter and windowWidth go together")
    window = (center, width, "LINEAR") if center is not None and width is not None else None
    quality = _number(values, "imageQuality", 1, 100)
    frame = _number(values, "frameNumber", 1, 10**7)
    options = RenderOptions(
        "image/png" if media_type == "image/png" else "image/jpeg",
        viewport,
        window,
        int(quality) if quality is not None else 90,
    )
    number = int(frame) if frame is not None else 1
    return await rendered_response(request, record, number, options, cache=False)


def add_routes(app: web.Application, root: str) -> None:
    del root  # WADO-URI lives at /wado, beside the DICOMweb root
    app.router.add_route("GET", "/wado", _wado)
