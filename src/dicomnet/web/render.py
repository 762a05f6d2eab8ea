"""Rendered and thumbnail resources (PS3.18 §10.4.1.1.4, §8.3.5) and the image half of WADO-URI:
a frame as a JPEG or PNG a browser shows.

One job: decode one frame (pydicom's decoders, one frame only when the data allows), apply the
Modality LUT and a VOI window (the request's ``window=center,width[,function]``, else the data
set's, else the frame's range), scale into the viewport, encode with Pillow. Rules:

- Bounded work: a source larger than ``max_render_pixels`` is refused (413); an output side above
  ``max_render_side`` or a parameter that does not parse is 400; a big source is subsampled
  before any floating point work, so memory follows the output size; renders run in worker
  threads, at most two at a time.
- Series and study resources render a representative instance (the middle one of the series,
  the first series of the study), as OHIF's thumbnails expect.
- A frame no decoder here can read is 406 (not acceptable in any form), never a 500.
- Thumbnails are cached in memory by instance, frame, file version and parameters.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from dicomnet.archive.index import InstanceRecord
from dicomnet.archive.metadata import Fragment
from dicomnet.web.common import HTTPProblem, archive_of, query_pairs
from dicomnet.web.media import accepts, parse_accept
from dicomnet.web.wado import records_of

__all__ = ["RenderOptions", "add_routes", "parse_options", "render"]

log = logging.getLogger("dicomnet.web")

_TYPES = ("image/jpeg", "image/png")
_PAIR_RE = re.compile(r"^[0-9]{1,6},[0-9]{1,6}$")
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_WINDOW_RE = re.compile(
    rf"^({_NUMBER}),({_NUMBER})(?:,(linear-exact|linear_exact|linear|sigmoid))?$", re.I
)
_CACHE_SIZE = 512


@dataclass(frozen=True, slots=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    viewport: tuple[int, int] | None = None
    window: tuple[float, float, str] | None = None
    quality: int = 90


def parse_options(
    pairs: list[tuple[str, str]], accept: str | None, *, max_side: int, thumbnail: bool
) -> RenderOptions:
    """Rendering parameters (``viewport``, ``window``, ``quality``, ``accept``); 400 when one
    does not parse, 406 when neither JPEG nor PNG is acceptable."""
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values and key in ("viewport", "window", "quality", "accept"):
            raise HTTPProblem(400, f"{key} is given more than once")
        values[key] = value
    media = accepts(parse_accept(values.get("accept", accept)), *_TYPES)
    if media is None:
        raise HTTPProblem(406, "rendered resources are image/jpeg or image/png")
    viewport: tuple[int, int] | None = (128, 128) if thumbnail else None
    if "viewport" in values:
        text = values["viewport"]
        if not _PAIR_RE.match(text):
            raise HTTPProblem(400, f"viewport={text[:40]!r}: expected width,height")
        width, height = (int(v) for v in text.split(","))
        if not (1 <= width <= max_side and 1 <= height <= max_side):
            raise HTTPProblem(400, f"viewport sides must be 1 to {max_side}")
        viewport = (width, height)
    window = None
    if "window" in values:
        match = _WINDOW_RE.match(values["window"])
        if match is None:
            raise HTTPProblem(400, "window: expected center,width[,linear|linear-exact|sigmoid]")
        level, span = float(match.group(1)), float(match.group(2))
        if span <= 0:
            raise HTTPProblem(400, "window width must be positive")
        window = (level, span, (match.group(3) or "linear").upper().replace("-", "_"))
    quality = 90
    if "quality" in values:
        text = values["quality"]
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 100:
            raise HTTPProblem(400, "quality must be 1 to 100")
        quality = int(text)
    return RenderOptions(media, viewport, window, quality)


def _frame_pixels(path: Path, index: int) -> tuple[Any, Any]:
    """(data set without pixels, the frame as a numpy array) with pydicom's decoders."""
    from pydicom import dcmread
    from pydicom.pixels.utils import pixel_array

    ds = dcmread(path, stop_before_pixels=True)
    try:
        arr = pixel_array(path, index=index)
    except AttributeError:  # deflated: pydicom reads the pixel data only from the inflated set
        full = dcmread(path)
        arr = full.pixel_array
        if int(full.get("NumberOfFrames", 1) or 1) > 1:
            arr = arr[index]
    return ds, arr


def render(path: Path, fragment: Fragment, number: int, options: RenderOptions,
           max_pixels: int) -> bytes:  # fmt: skip
    """The image of frame ``number`` (from 1) of the instance at ``path``."""
    import numpy as np
    from PIL import Image
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    rows, columns = fragment.rows or 0, fragment.columns or 0
    if rows * columns > max_pixels:
        raise HTTPProblem(413, f"{columns}x{rows} is larger than this server renders")
    fast = _native_grey(path, fragment, number - 1, options)
    if fast is not None:
        return _encode(fast, options)
    try:
        ds, arr = _frame_pixels(path, number - 1)
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        raise HTTPProblem(406, f"this frame cannot be decoded here: {exc}"[:300]) from None
    # subsample a big source before any float work: memory follows the output
    if options.viewport is not None:
        step = max(
            1, min(arr.shape[0] // options.viewport[1], arr.shape[1] // options.viewport[0]) // 2
        )
        if step > 1:
            arr = arr[::step, ::step]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    color = arr.ndim == 3
    if color:
        if arr.dtype != np.uint8:
            high = float(arr.max()) or 1.0
            arr = (arr.astype(np.float32) * (255.0 / high)).clip(0, 255)
        image = Image.fromarray(arr.astype(np.uint8), "RGB")
    else:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
        window = options.window or _dataset_window(ds)
        if window is not None:
            scaled = _windowed(values, *window)
        else:
            if "VOILUTSequence" in ds:
                values = np.asarray(apply_voi_lut(values, ds), dtype=np.float32)
            low, high = float(values.min()), float(values.max())
            scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
        if photometric == "MONOCHROME1":
            scaled = 255.0 - scaled
        image = Image.fromarray(scaled.clip(0, 255).astype(np.uint8), "L")
    return _encode(image, options)


def _encode(image: Any, options: RenderOptions) -> bytes:
    if options.viewport is not None:
        image.thumbnail(options.viewport)
    out = io.BytesIO()
    if options.media_type == "image/png":
        image.save(out, "PNG")
    else:
        image.save(out, "JPEG", quality=options.quality)
    return out.getvalue()


def _value(document: dict[str, Any], tag: str) -> Any:
    values = (document.get(tag) or {}).get("Value")
    return values[0] if values else None


def _native_grey(path: Path, fragment: Fragment, index: int, options: RenderOptions) -> Any:
    """The frame as an 8-bit PIL image, read straight from the file and windowed through a
    lookup table over the stored values, for the common case: native little endian, one
    sample, 8 or 16 bits allocated, a linear Modality LUT (Rescale Slope/Intercept) and no VOI
    LUT Sequence (PS3.3 C.11.1, C.11.2). None for anything else (pydicom's path handles it).
    The same numbers as the general path; one pass over the pixels instead of a parse and
    several float arrays."""
    import numpy as np
    from PIL import Image

    bits = fragment.bits_allocated
    if (
        fragment.pixel_tag != 0x7FE00010
        or fragment.encapsulated
        or not fragment.little_endian
        or fragment.pixel_offset is None
        or fragment.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"  # deflated: offsets differ
        or (fragment.samples_per_pixel or 1) != 1
        or bits not in (8, 16)
        or not fragment.rows
        or not fragment.columns
    ):
        return None
    try:
        document = json.loads(fragment.json)
    except ValueError:
        return None
    photometric = str(_value(document, "00280004") or "MONOCHROME2").strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or "00283010" in document:
        return None  # a VOI LUT Sequence, or colour: the general path
    if "00283000" in document:  # a Modality LUT Sequence
        return None
    stored = _value(document, "00280101") or bits
    signed = _value(document, "00280103") == 1
    try:
        slope = float(_value(document, "00281053") or 1.0)
        intercept = float(_value(document, "00281052") or 0.0)
        stored = int(stored)
    except (TypeError, ValueError):
        return None
    if not 1 <= stored <= bits:
        return None
    rows, columns = fragment.rows, fragment.columns
    frame_bytes = rows * columns * bits // 8
    with open(path, "rb") as f:
        f.seek(fragment.pixel_offset + index * frame_bytes)
        data = f.read(frame_bytes)
    if len(data) != frame_bytes:
        return None
    arr = np.frombuffer(data, "<u2" if bits == 16 else "u1").reshape(rows, columns)
    if options.viewport is not None:  # subsample a big source first, as the general path does
        step = max(1, min(rows // options.viewport[1], columns // options.viewport[0]) // 2)
        if step > 1:
            arr = arr[::step, ::step]
    size = 1 << stored
    codes = arr & (size - 1) if stored < bits else arr
    if signed:  # two's complement in ``stored`` bits, as an index from the most negative
        codes = codes ^ (size >> 1)
    domain = np.arange(size, dtype=np.float64) - ((size >> 1) if signed else 0)
    values = domain * slope + intercept  # the Modality LUT (PS3.3 C.11.1.1.2)
    window = options.window or _window_of(document)
    if window is not None:
        lut = _windowed(values, *window)
    else:  # the frame's own range
        present = values[[int(codes.min()), int(codes.max())]]
        low, high = float(present.min()), float(present.max())
        lut = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    if photometric == "MONOCHROME1":
        lut = 255.0 - lut
    table = lut.clip(0, 255).astype(np.uint8)
    return Image.fromarray(table[codes], "L")


def _window_of(document: dict[str, Any]) -> tuple[float, float, str] | None:
    """The first Window Center/Width of a DICOM JSON object (as ``_dataset_window``)."""
    try:
        center, width = float(_value(document, "00281050")), float(_value(document, "00281051"))
    except (TypeError, ValueError):
        return None
    function = str(_value(document, "00281056") or "LINEAR").upper()
    return (center, width, function) if width > 0 else None


def _dataset_window(ds: Any) -> tuple[float, float, str] | None:
    """The data set's first Window Center/Width (PS3.3 C.11.2), if usable."""
    from pydicom.multival import MultiValue

    def first(value: Any) -> float:
        return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)

    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        level, span = first(center), first(width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return (level, span, function) if span > 0 else None


def _windowed(values: Any, center: float, width: float, function: str) -> Any:
    """VOI windowing to 0..255 (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID)."""
    import numpy as np

    if function == "SIGMOID":
        with np.errstate(over="ignore"):  # exp() to infinity far below the center: 0, right
            return 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return ((values - center) / width + 0.5).clip(0.0, 1.0) * 255.0
    if width <= 1:
        return np.where(values > center - 0.5, 255.0, 0.0)
    return ((values - (center - 0.5)) / (width - 1) + 0.5).clip(0.0, 1.0) * 255.0


def _cached(cache: OrderedDict[Any, bytes], key: Any) -> bytes | None:
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _remember(cache: OrderedDict[Any, bytes], key: Any, value: bytes) -> None:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _representative(records: list[InstanceRecord], depth: int) -> InstanceRecord:
    """The instance a series (the middle one) or a study (its first series' middle one) shows."""
    if depth == 3:
        return records[0]
    if depth == 1:
        first_series = records[0].series_instance_uid
        records = [r for r in records if r.series_instance_uid == first_series]

    def number(r: InstanceRecord) -> int:
        try:
            return int(r.instance_number or 0)
        except ValueError:
            return 0

    ordered = sorted(records, key=number)
    return ordered[len(ordered) // 2]


async def rendered_response(
    request: web.Request,
    record: InstanceRecord,
    number: int | None,
    options: RenderOptions,
    *,
    cache: bool,
) -> web.Response:
    """Render frame ``number`` (None: the middle frame of a multi-frame, else the first)."""
    archive = archive_of(request)
    if archive.store is None:
        raise HTTPProblem(503, "this server has no metadata store")
    path = archive.root / record.path
    fragment = await asyncio.to_thread(archive.store.get, record.sop_instance_uid, path)
    if fragment is None:
        raise HTTPProblem(404, "the file of this instance is missing or unreadable")
    if fragment.pixel_tag is None:
        raise HTTPProblem(404, "this instance has no image to render")
    frames = fragment.number_of_frames or 1
    if number is None:
        number = (frames + 1) // 2 if cache else 1
    if number > frames:
        raise HTTPProblem(404, f"frame {number} does not exist: the instance has {frames}")
    key = (record.sop_instance_uid, number, fragment.size, fragment.mtime_ns, options)
    data = _cached(archive.render_cache, key) if cache else None
    if data is None:
        async with archive.render_slots:
            data = await asyncio.to_thread(
                render, path, fragment, number, options, archive.config.max_render_pixels
            )
        if cache:
            _remember(archive.render_cache, key, data)
    return web.Response(body=data, headers={"Content-Type": options.media_type})


def _handler(depth: int, *, thumbnail: bool, frame: bool = False) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        config = archive_of(request).config
        options = parse_options(
            query_pairs(request),
            request.headers.get("Accept"),
            max_side=config.max_render_side,
            thumbnail=thumbnail,
        )
        number = None
        if frame:
            text = request.match_info["frame"]
            if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 10**7:
                raise HTTPProblem(400, f"frame {text[:20]!r}: a frame number from 1")
            number = int(text)
        records = await records_of(request, depth)
        record = _representative(records, depth)
        return await rendered_response(request, record, number, options, cache=thumbnail)

    return handler


def add_routes(app: web.Application, root: str) -> None:
    study = root + "/studies/{study:[^/]+}"
    series = study + "/series/{series:[^/]+}"
    instance = series + "/instances/{instance:[^/]+}"
    add = app.router.add_route
    for depth, path in enumerate((study, series, instance), 1):
        add("GET", path + "/rendered", _handler(depth, thumbnail=False))
        add("GET", path + "/thumbnail", _handler(depth, thumbnail=True))
    add(
        "GET",
        instance + "/frames/{frame:[^/,]+}/rendered",
        _handler(3, thumbnail=False, frame=True),
    )
    add(
        "GET",
        instance + "/frames/{frame:[^/,]+}/thumbnail",
        _handler(3, thumbnail=True, frame=True),
    )
