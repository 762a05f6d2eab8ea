"""What the send and store paths ask of the pixel layer besides ``transcode_file``:
``probe_file`` (pixels? lossy?), ``dataset_mislabelled`` (a data set not in the VR encoding its
syntax says), ``convert_for_storage`` (``serve --store-as``: what is worth converting) and the
pool's ``run``/``convert_for_storage``/``warm``. No network."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.dataset import read_file_info
from dicomnet.errors import TranscodeError
from dicomnet.pixels import (
    TranscodePool,
    can_encode,
    convert_for_storage,
    dataset_mislabelled,
    probe_file,
)
from tests.helpers import make_ct, write_ct

JLS = "1.2.840.10008.1.2.4.80"
codecs = pytest.mark.skipif(
    not can_encode("jpeg-ls-lossless"), reason="the codecs extra is not installed"
)


def _testdata(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def test_probe_says_whether_there_are_pixels_and_whether_they_were_lossy(tmp_path: Path) -> None:
    ct = tmp_path / "ct.dcm"
    write_ct(ct, rows=4, columns=4)
    assert (probe_file(ct).has_pixels, probe_file(ct).lossy) == (True, False)
    report = probe_file(_testdata("reportsi.dcm"))
    assert (report.has_pixels, report.lossy) == (False, False)
    assert probe_file(_testdata("SC_rgb_jpeg_dcmtk.dcm")).lossy  # JPEG Baseline: always lossy
    marked = make_ct(rows=4, columns=4)
    marked.LossyImageCompression = "01"
    marked.save_as(tmp_path / "marked.dcm", enforce_file_format=True)
    assert probe_file(tmp_path / "marked.dcm").lossy
    assert probe_file(_testdata("image_dfl.dcm")).has_pixels  # deflated: inflated first
    with pytest.raises(TranscodeError, match="past the end of the file"):
        probe_file(_testdata("MR_truncated.dcm"))


def test_mislabelled_data_sets_are_recognised_by_their_first_element_header(
    tmp_path: Path,
) -> None:
    source = _testdata("SC_rgb_jpeg.dcm")  # implicit VR under JPEG Baseline
    info = read_file_info(source)
    assert dataset_mislabelled(source, info.offset, info.transfer_syntax)
    for name in ("CT_small.dcm", "rtplan.dcm", "SC_rgb_jpeg_dcmtk.dcm", "ExplVR_BigEnd.dcm"):
        path = _testdata(name)
        info = read_file_info(path)
        assert not dataset_mislabelled(path, info.offset, info.transfer_syntax), name
    # The other way round: an explicit VR data set labelled Implicit VR Little Endian (its
    # first header holds a VR where an implicit one holds the length's low bytes).
    path = tmp_path / "explicit.dcm"
    write_ct(path, rows=4, columns=4)
    info = read_file_info(path)
    assert not dataset_mislabelled(path, info.offset, ExplicitVRLittleEndian)
    assert dataset_mislabelled(path, info.offset, ImplicitVRLittleEndian)


@codecs
def test_convert_for_storage_converts_only_what_is_worth_it(tmp_path: Path) -> None:
    ct = tmp_path / "ct.dcm"
    write_ct(ct, rows=16, columns=16)
    out = tmp_path / "out.dcm"
    result = convert_for_storage(ct, out, "jpeg-ls-lossless")
    assert result is not None and result.transfer_syntax == JLS and out.exists()
    assert (dcmread(out).pixel_array == dcmread(ct).pixel_array).all()
    out.unlink()
    kept = {
        "in the target already": out.with_name("again.dcm"),
        "no pixels": _testdata("reportsi.dcm"),
        "lossy before": _testdata("SC_rgb_jpeg_dcmtk.dcm"),
    }
    transcode_out = tmp_path / "jls.dcm"
    convert_for_storage(ct, transcode_out, "jpeg-ls-lossless")
    kept["in the target already"] = transcode_out
    for why, path in kept.items():
        assert convert_for_storage(path, out, "jpeg-ls-lossless") is None, why
        assert not out.exists(), why
    with pytest.raises(TranscodeError, match="lossy"):
        convert_for_storage(ct, out, "jpeg-baseline")


@codecs
async def test_the_pool_runs_both_conversions_and_warms_up(tmp_path: Path) -> None:
    ct = tmp_path / "ct.dcm"
    write_ct(ct, rows=16, columns=16)
    async with TranscodePool(max_workers=1) as pool:
        pool.warm()
        stored = await pool.convert_for_storage(ct, tmp_path / "a.dcm", "jpeg-ls-lossless")
        assert stored is not None and stored.transfer_syntax == JLS
        assert await pool.convert_for_storage(tmp_path / "a.dcm", tmp_path / "b.dcm", JLS) is None
        result = await pool.transcode(tmp_path / "a.dcm", tmp_path / "c.dcm", "explicit-le")
        assert result.transfer_syntax == ExplicitVRLittleEndian
        # Warnings met in the worker come back as notes (logged here, not printed there).
        mislabelled = await pool.transcode(
            _testdata("SC_rgb_jpeg.dcm"), tmp_path / "d.dcm", "explicit-le"
        )
        assert any("not encoded as its transfer syntax says" in n for n in mislabelled.notes)


@codecs
async def test_a_cancelled_conversion_leaves_no_file(tmp_path: Path) -> None:
    """The caller gave up (its association ended) while the worker converted: what the worker
    writes afterwards is removed."""
    import asyncio

    ct = tmp_path / "ct.dcm"
    write_ct(ct, rows=512, columns=512, frames=16)
    out = tmp_path / "out.dcm"
    async with TranscodePool(max_workers=1) as pool:
        await pool.transcode(ct, tmp_path / "warm.dcm", "rle")  # the worker is up
        task = asyncio.create_task(pool.transcode(ct, out, "jpeg2000-lossless"))
        for _ in range(1000):  # until the worker has started writing (bounded: 10 s)
            if list(tmp_path.glob(".transcode-*")):
                break
            await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The worker finishes on its own; its next task runs after it.
        await pool.transcode(ct, tmp_path / "after.dcm", "rle")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.dcm", "ct.dcm", "warm.dcm"]
