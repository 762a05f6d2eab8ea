"""WADO-RS frames and bulk data (PS3.18 §10.4.1.1.3-4): pixel data frames and binary values
taken straight from the stored file.

One job: locate a frame or a value in the file and send its bytes. Rules:

- Native (uncompressed) pixel data: frame ``n`` is ``rows x columns x samples x bits`` bytes at
  a computed offset, read with one ``pread`` (the offsets are cached with the metadata
  fragment); big endian data is byte-swapped to little endian, so a native frame is always
  Explicit VR Little Endian. 1-bit data is unpacked and repacked frame by frame.
- Encapsulated pixel data: the frame is found through the Basic (or Extended) Offset Table or
  the fragments (``pydicom.encaps.get_frame``), reading only the items it needs.
- Media types (PS3.18 Table 8.7.3-5): a native frame is ``application/octet-stream``; a
  compressed one goes out as stored when the client takes its type (``image/jpeg``,
  ``image/jls``, ..., ``*/*``, or ``transfer-syntax=*``) and is labelled with its stored
  transfer syntax; anything else needs a registered codec (``transcode.set_codec``) or is 406.
- Frame numbers start at 1 (0, negatives, non-numbers: 400); a frame past the last: 404; at
  most ``max_frames_per_request`` per request.
- Bulk data paths are ``TAG`` or ``SEQTAG/ITEM/TAG/...`` as the metadata's BulkDataURIs give
  them; the pixel data path serves every frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from dicomnet.archive.index import InstanceRecord
from dicomnet.archive.metadata import Fragment
from dicomnet.web.common import HTTPProblem, archive_of, cut_short, decorate, path_uid
from dicomnet.web.media import (
    EXPLICIT_VR_LE,
    MediaRange,
    Want,
    default_syntax,
    media_type_for,
    parse_accept,
    syntaxes_for,
    wants,
)
from dicomnet.web.multipart import closing, new_boundary, part_header
from dicomnet.web.transcode import UNCOMPRESSED, codec
from dicomnet.web.wado import accept_of, read_chunks

__all__ = ["add_routes", "read_frame"]

log = logging.getLogger("dicomnet.web")

_FRAME_TYPES = (
    "application/octet-stream",
    "image/jpeg",
    "image/jls",
    "image/jp2",
    "image/jpx",
    "image/jphc",
    "image/dicom-rle",
    "video/mpeg",
    "video/mp4",
    "video/h265",
)
_FRAMES_RE = re.compile(r"^[0-9]{1,9}(,[0-9]{1,9})*$")
_BULK_RE = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8}){0,16}$")
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


@dataclass(slots=True)
class _Plan:
    """How the frames of one instance go out: single part or multipart, the part's media type
    and transfer syntax, and the conversion they need (None: the stored bytes, LE if native)."""

    multipart: bool
    media_type: str
    transfer_syntax: str
    convert_to: str | None


def _native(fragment: Fragment) -> bool:
    return not fragment.encapsulated and fragment.transfer_syntax_uid in UNCOMPRESSED


def plan_frames(fragment: Fragment, options: list[Want]) -> _Plan | None:
    """The first acceptable way to send this instance's frames, or None (406)."""
    stored = fragment.transfer_syntax_uid
    stored_ts = EXPLICIT_VR_LE if _native(fragment) else stored
    stored_type = media_type_for(stored_ts)
    found = codec()
    for want in options:
        part, asked = want.part_type, want.transfer_syntax
        if "*" in part:  # */*, image/*: the stored form if the wildcard covers its type
            if asked in (None, "*", stored_ts) and MediaRange(part).matches(stored_type):
                return _Plan(want.multipart, stored_type, stored_ts, None)
            continue
        carried = syntaxes_for(part)
        if asked == "*" or (asked is None and stored_ts in carried):
            # as stored, labelled with the type asked (OHIF asks octet-stream with "*" for
            # everything and reads the transfer syntax from the part's Content-Type)
            if part == "application/octet-stream" or stored_ts in carried:
                return _Plan(want.multipart, part, stored_ts, None)
            continue
        target = asked or default_syntax(part)
        if target is None or target not in carried:
            continue
        if target == stored_ts:
            return _Plan(want.multipart, part, target, None)
        if found is not None and found.can_convert(stored, target):
            return _Plan(want.multipart, part, target, target)
    return None


def _frame_numbers(text: str, limit: int) -> list[int]:
    if not _FRAMES_RE.match(text):
        raise HTTPProblem(400, f"frame list {text[:60]!r}: expected numbers from 1, with commas")
    numbers = [int(n) for n in text.split(",")]
    if len(numbers) > limit:
        raise HTTPProblem(400, f"more than {limit} frames in one request")
    if min(numbers) < 1:
        raise HTTPProblem(400, "frame numbers start at 1")
    return numbers


def read_frame(path: Path, fragment: Fragment, number: int) -> bytes:
    """Frame ``number`` (from 1) of the instance stored at ``path``, as stored (native frames
    in little endian)."""
    frames = fragment.number_of_frames or 1
    if fragment.pixel_offset is None:  # deflated: inflate the whole data set
        ds = dcmread(path)
        return _slice_native(ds.PixelData, fragment, number, frames, little=True)
    if fragment.encapsulated:
        with open(path, "rb") as f:
            f.seek(fragment.pixel_offset)
            offsets = _extended_offsets(path, fragment)
            return get_frame(f, number - 1, number_of_frames=frames, extended_offsets=offsets)
    bits = fragment.bits_allocated or 16
    size = _frame_bits(fragment)
    if bits == 1 or size % 8:
        with open(path, "rb") as f:
            f.seek(fragment.pixel_offset)
            data = f.read(fragment.pixel_length or 0)
        return _slice_native(data, fragment, number, frames, little=fragment.little_endian)
    size //= 8
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), size, fragment.pixel_offset + (number - 1) * size)
    if len(data) != size:
        raise HTTPProblem(500, f"the pixel data of {path.name} is shorter than its frames")
    if not fragment.little_endian:
        data = _swap(data, fragment.pixel_vr or "OW", bits)
    return data


def _frame_bits(fragment: Fragment) -> int:
    return (
        (fragment.rows or 0)
        * (fragment.columns or 0)
        * (fragment.samples_per_pixel or 1)
        * (fragment.bits_allocated or 16)
    )


def _slice_native(data: bytes, fragment: Fragment, number: int, frames: int, little: bool) -> bytes:
    bits = _frame_bits(fragment)
    if bits % 8 == 0:
        size = bits // 8
        frame = data[(number - 1) * size : number * size]
        if len(frame) != size:
            raise HTTPProblem(500, "the pixel data is shorter than its frames")
        return frame if little else _swap(frame, fragment.pixel_vr or "OW", 16)
    import numpy as np  # 1-bit frames that do not start on a byte (PS3.5 §8.1.1)

    unpacked = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    chunk = unpacked[(number - 1) * bits : number * bits]
    if chunk.size != bits:
        raise HTTPProblem(500, "the pixel data is shorter than its frames")
    return bytes(np.packbits(chunk, bitorder="little").tobytes())


def _swap(data: bytes, vr: str, bits: int) -> bytes:
    size = _WORD.get(vr, 2 if bits > 8 else 1)
    if size == 1:
        return data
    fmt = {2: "H", 4: "I", 8: "Q"}[size]
    count = len(data) // size
    values = struct.unpack(f">{count}{fmt}", data[: count * size])
    return struct.pack(f"<{count}{fmt}", *values) + data[count * size :]


def _extended_offsets(path: Path, fragment: Fragment) -> tuple[bytes, bytes] | None:
    if b'"7FE00001"' not in fragment.json:
        return None
    ds = dcmread(path, stop_before_pixels=True, specific_tags=[0x7FE00001, 0x7FE00002])
    if 0x7FE00001 not in ds or 0x7FE00002 not in ds:
        return None
    return bytes(ds[0x7FE00001].value), bytes(ds[0x7FE00002].value)


async def _instance(request: web.Request) -> tuple[InstanceRecord, Path, Fragment]:
    """The instance the path names, its file and its cached metadata (one worker hop)."""
    archive = archive_of(request)
    store = archive.store
    if store is None:
        raise HTTPProblem(503, "this server has no metadata store")
    query = {
        "StudyInstanceUID": ("UI", path_uid(request, "study")),
        "SeriesInstanceUID": ("UI", path_uid(request, "series")),
        "SOPInstanceUID": ("UI", path_uid(request, "instance")),
    }
    await archive.ready()

    def find() -> tuple[InstanceRecord, Path, Fragment | None]:
        records = archive.index.instances("IMAGE", query, model="STUDY", relational=True)
        record = next(iter(records), None)
        if record is None:
            raise HTTPProblem(404, "no such instance in this archive")
        path = archive.root / record.path
        return record, path, store.get(record.sop_instance_uid, path)

    record, path, fragment = await asyncio.to_thread(find)
    if fragment is None:
        raise HTTPProblem(404, "the file of this instance is missing or unreadable")
    return record, path, fragment


async def _send_frames(
    request: web.Request,
    path: Path,
    fragment: Fragment,
    numbers: list[int],
) -> web.StreamResponse:
    if fragment.pixel_tag is None:
        raise HTTPProblem(404, "this instance has no pixel data")
    frames = fragment.number_of_frames or 1
    past = [n for n in numbers if n > frames]
    if past:
        raise HTTPProblem(404, f"frame {past[0]} does not exist: the instance has {frames}")
    accept = accept_of(request)
    options = wants(parse_accept(accept), _FRAME_TYPES)
    if len(numbers) > 1:
        options = [w for w in options if w.multipart]
    plan = plan_frames(fragment, options)
    if plan is None:
        raise HTTPProblem(
            406,
            f"frames stored in {fragment.transfer_syntax_uid} cannot be sent as asked "
            f"(Accept: {accept!r:.200})",
        )
    multipart = plan.multipart
    content_type = f"{plan.media_type}; transfer-syntax={plan.transfer_syntax}"

    def frame(number: int) -> bytes:
        data = read_frame(path, fragment, number)
        if plan.convert_to is not None:
            found = codec()
            assert found is not None
            data = found.convert_frame(
                data, fragment.transfer_syntax_uid, plan.convert_to, fragment
            )
        return data

    if not multipart:
        data = await asyncio.to_thread(frame, numbers[0])
        return web.Response(body=data, headers={"Content-Type": content_type})
    boundary = new_boundary()
    response = web.StreamResponse(
        headers={
            "Content-Type": f'multipart/related; type="{plan.media_type}"; boundary={boundary}'
        }
    )
    decorate(request, response)
    first = await asyncio.to_thread(frame, numbers[0])  # errors before the status is sent
    await response.prepare(request)
    try:
        for n, number in enumerate(numbers):
            data = first if n == 0 else await asyncio.to_thread(frame, number)
            await response.write(part_header(boundary, content_type, first=n == 0))
            await response.write(data)
        await response.write(closing(boundary))
    except Exception as exc:  # the status is sent: close rather than look complete
        cut_short(request, exc)
        return response
    await response.write_eof()
    return response


async def _frames(request: web.Request) -> web.StreamResponse:
    config = archive_of(request).config
    numbers = _frame_numbers(request.match_info["frames"], config.max_frames_per_request)
    _record, path, fragment = await _instance(request)
    return await _send_frames(request, path, fragment, numbers)


# --- bulk data -----------------------------------------------------------------------------------


def _bulk_value(path: Path, steps: list[str], little: bool) -> bytes | None:
    """The bytes of the binary element at ``steps`` (tag, item, tag, ...), or None."""
    ds: Dataset = dcmread(path, stop_before_pixels=True)
    node: Dataset = ds
    for position in range(0, len(steps) - 1, 2):
        tag = int(steps[position], 16)
        if tag not in node or node[tag].VR != "SQ":
            return None
        items = node[tag].value
        index = int(steps[position + 1])
        if index >= len(items):
            return None
        node = items[index]
    tag = int(steps[-1], 16)
    if tag not in node:
        return None
    elem = node[tag]
    value = elem.value
    if not isinstance(value, bytes | bytearray):
        return None
    data = bytes(value)
    if not little and elem.VR in _WORD:
        data = _swap(data, elem.VR, 16)
    return data


async def _bulkdata(request: web.Request) -> web.StreamResponse:
    attribute_path = request.match_info["path"]
    if not _BULK_RE.match(attribute_path):
        raise HTTPProblem(400, f"bulk data path {attribute_path[:80]!r} is not TAG[/ITEM/TAG...]")
    steps = attribute_path.split("/")
    _record, path, fragment = await _instance(request)
    if len(steps) == 1 and int(steps[0], 16) == fragment.pixel_tag:
        if fragment.encapsulated or fragment.pixel_offset is None or not fragment.little_endian:
            numbers = list(range(1, (fragment.number_of_frames or 1) + 1))
            return await _send_frames(request, path, fragment, numbers)
        return await _send_bytes(request, path, fragment.pixel_offset, fragment.pixel_length)
    data = await asyncio.to_thread(_bulk_value, path, steps, fragment.little_endian)
    if data is None:
        raise HTTPProblem(404, f"no bulk value at {attribute_path} in this instance")
    return await _send_bytes(request, None, 0, len(data), data)


async def _send_bytes(
    request: web.Request,
    path: Path | None,
    offset: int,
    length: int | None,
    data: bytes | None = None,
) -> web.StreamResponse:
    """One octet-stream value, single part or in a multipart/related (as the client asks)."""
    options = wants(parse_accept(accept_of(request)), ("application/octet-stream",))
    options = [w for w in options if w.transfer_syntax in (None, "*", EXPLICIT_VR_LE)]
    if not options:
        raise HTTPProblem(406, "bulk data is application/octet-stream")
    multipart = options[0].multipart
    boundary = new_boundary()
    if multipart:
        content_type = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    else:
        content_type = "application/octet-stream"
    response = web.StreamResponse(headers={"Content-Type": content_type})
    decorate(request, response)
    await response.prepare(request)
    try:
        if multipart:
            await response.write(part_header(boundary, "application/octet-stream", first=True))
        if data is not None:
            await response.write(data)
        elif path is not None:
            async for chunk in read_chunks(path, offset, length):
                await response.write(chunk)
        if multipart:
            await response.write(closing(boundary))
    except Exception as exc:  # the status is sent: close rather than look complete
        cut_short(request, exc)
        return response
    await response.write_eof()
    return response


def add_routes(app: web.Application, root: str) -> None:
    instance = root + "/studies/{study:[^/]+}/series/{series:[^/]+}/instances/{instance:[^/]+}"
    app.router.add_route("GET", instance + "/frames/{frames}", _frames)
    app.router.add_route("GET", instance + "/bulkdata/{path:.+}", _bulkdata)
