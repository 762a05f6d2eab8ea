"""Codec work off the event loop: ``transcode_file_async`` runs in worker processes (threads are
not an option: the codecs keep the GIL or, openjpeg's encoder, crash when two threads encode),
the loop keeps running meanwhile, and a TranscodeError crosses the process boundary intact."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from pydicom import dcmread  # noqa: E402

from dicomnet.errors import TranscodeError  # noqa: E402
from dicomnet.pixels import TranscodePool, can_encode, transcode_file_async  # noqa: E402
from tests.unit.test_pixels_transcode import smooth, write_image  # noqa: E402

pytestmark = pytest.mark.skipif(
    not can_encode("jpeg2000-lossless"), reason="the codecs extra is not installed"
)


async def test_transcodes_in_a_worker_while_the_loop_keeps_running(tmp_path: Path) -> None:
    pixels = smooth(24, 128, 128, 1, 12, False, 4)
    src = tmp_path / "src.dcm"
    write_image(src, pixels, bits_stored=12)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with TranscodePool(max_workers=2) as pool:
        await pool.transcode(src, tmp_path / "warm.dcm", "rle")  # start the worker first
        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        result = await transcode_file_async(
            src, tmp_path / "j2k.dcm", "jpeg2000-lossless", pool=pool
        )
        elapsed = time.perf_counter() - started
        stop.set()
        await tick
    assert result.frames == 24
    assert np.array_equal(dcmread(tmp_path / "j2k.dcm").pixel_array, pixels)
    # The codec ran elsewhere: the loop ticked all along (a blocked loop shows one gap as long
    # as the whole transcode).
    assert len(gaps) > 3
    assert max(gaps) < max(0.25, elapsed / 2)


async def test_errors_cross_the_process_boundary(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom" * 40)
    async with TranscodePool(max_workers=1) as pool:
        with pytest.raises(TranscodeError, match="not a DICOM Part 10 file"):
            await pool.transcode(junk, tmp_path / "out.dcm", "rle")
        # The pool still works after a failure.
        src = tmp_path / "ok.dcm"
        write_image(src, smooth(1, 16, 16, 1, 8, False, 1), bits_stored=8)
        assert (await pool.transcode(src, tmp_path / "rle.dcm", "rle")).frames == 1
