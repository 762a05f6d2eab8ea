"""WADO-RS frames and bulk data from the stored files, across transfer syntaxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.helpers import make_ct
from tests.web.conftest import Archive, raw_url, web_client
from tests.web.test_wado import split_multipart

ROOT = "/dicom-web"
OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
OCTET = 'multipart/related; type="application/octet-stream"'


@pytest.fixture
def archive_files(tmp_path: Path) -> Archive:
    arc = Archive(tmp_path / "frames")
    arc.root.mkdir()
    arc.add(make_ct(frames=3, rows=8, columns=8))
    implicit = make_ct(rows=8, columns=8)
    implicit.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    arc.add(implicit)
    for name in (
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle_2frame.dcm",
        "image_dfl.dcm",
    ):
        arc.add(dcmread(get_testdata_file(name)))
    # 1-bit frames of 3 x 3 pixels: 9 bits, frames do not start on a byte
    seg = make_ct(rows=3, columns=3)
    seg.BitsAllocated = seg.BitsStored = 1
    seg.HighBit = 0
    seg.NumberOfFrames = 3
    bits = np.array(
        [1, 0, 1, 0, 1, 0, 1, 0, 1] + [1] * 9 + [0, 1, 1, 0, 0, 0, 0, 0, 1], dtype=np.uint8
    )
    seg.PixelData = np.packbits(bits, bitorder="little").tobytes() + b"\x00"
    arc.add(seg)
    arc.seg_bits = bits  # type: ignore[attr-defined]
    # a binary value in a sequence, large enough to be bulk data
    doc = make_ct()
    item = Dataset()
    item.add_new(0x00420011, "OB", bytes(range(256)) * 8)
    doc.add_new(0x00400275, "SQ", Sequence([item]))
    arc.add(doc)
    return arc


def url_of(ds: Any) -> str:
    return f"{ROOT}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def find(
    arc: Archive, ts: str | None = None, frames: int | None = None, bits: int | None = None
) -> Any:
    for ds in arc.datasets.values():
        if ts is not None and ds.file_meta.TransferSyntaxUID != ts:
            continue
        if frames is not None and int(ds.get("NumberOfFrames", 1)) != frames:
            continue
        if bits is not None and ds.BitsAllocated != bits:
            continue
        return ds
    raise LookupError(ts)


async def get(client: Any, url: str, accept: str | None, status: int = 200) -> tuple[Any, bytes]:
    headers = {"Accept": accept} if accept else {}
    fetch = client.session.get if url.startswith("http") else client.get  # absolute BulkDataURI
    response = await fetch(url, headers=headers)
    body = await response.read()
    assert response.status == status, body[:300]
    return response, body


async def parts(
    client: Any, url: str, accept: str | None = OCTET
) -> list[tuple[dict[str, str], bytes]]:
    response, body = await get(client, url, accept)
    return split_multipart(body, response.headers["Content-Type"])


async def test_native_frames(archive_files: Archive) -> None:
    index = archive_files.index()
    try:
        async with web_client(archive_files.root, index) as client:
            ds = find(archive_files, "1.2.840.10008.1.2.1", frames=3)
            frame_size = 8 * 8 * 2
            [(headers, data)] = await parts(client, url_of(ds) + "/frames/2")
            assert (
                headers["Content-Type"]
                == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
            )
            assert data == ds.PixelData[frame_size : 2 * frame_size]
            got = await parts(client, url_of(ds) + "/frames/3,1,3", OHIF)
            assert [d for _, d in got] == [
                ds.PixelData[2 * frame_size :],
                ds.PixelData[:frame_size],
                ds.PixelData[2 * frame_size :],
            ]
            # single part for one frame
            _response, body = await get(
                client, url_of(ds) + "/frames/1", "application/octet-stream"
            )
            assert body == ds.PixelData[:frame_size]
            await get(client, url_of(ds) + "/frames/1,2", "application/octet-stream", status=406)
            # dicomweb-client's default
            assert (
                len(await parts(client, url_of(ds) + "/frames/1", 'multipart/related; type="*/*"'))
                == 1
            )
            # implicit VR LE: the same bytes, labelled Explicit VR LE
            ds = find(archive_files, "1.2.840.10008.1.2")
            [(headers, data)] = await parts(client, url_of(ds) + "/frames/1", OHIF)
            assert data == ds.PixelData
            assert headers["Content-Type"].endswith("1.2.840.10008.1.2.1")
            # big endian: swapped to little endian
            ds = find(archive_files, "1.2.840.10008.1.2.2")
            [(_, data)] = await parts(client, url_of(ds) + "/frames/1")
            expected = dcmread(archive_files.paths[ds.SOPInstanceUID]).pixel_array
            assert data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
            # deflated: inflated to find the frame
            ds = find(archive_files, "1.2.840.10008.1.2.1.99")
            [(_, data)] = await parts(client, url_of(ds) + "/frames/1")
            assert data == dcmread(archive_files.paths[ds.SOPInstanceUID]).PixelData
            # 1-bit frames
            ds = find(archive_files, bits=1)
            bits = archive_files.seg_bits  # type: ignore[attr-defined]
            [(_, data)] = await parts(client, url_of(ds) + "/frames/3")
            got_bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:9]
            assert list(got_bits) == list(bits[18:27])
    finally:
        index.close()


async def test_compressed_frames(archive_files: Archive) -> None:
    index = archive_files.index()
    try:
        async with web_client(archive_files.root, index) as client:
            ds = find(archive_files, "1.2.840.10008.1.2.4.91")
            expected = next(
                generate_frames(
                    dcmread(archive_files.paths[ds.SOPInstanceUID]).PixelData, number_of_frames=1
                )
            )
            [(headers, data)] = await parts(client, url_of(ds) + "/frames/1", OHIF)
            assert data == expected
            assert (
                headers["Content-Type"]
                == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.91"
            )
            [(headers, data)] = await parts(
                client, url_of(ds) + "/frames/1", 'multipart/related; type="image/jp2"'
            )
            assert headers["Content-Type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
            [(headers, _)] = await parts(
                client, url_of(ds) + "/frames/1", 'multipart/related; type="*/*"'
            )
            assert headers["Content-Type"].startswith("image/jp2;")
            # asked uncompressed or in another syntax: no codec here, 406 (never 500)
            for accept in (OCTET, 'multipart/related; type="image/jpeg"', "image/jpeg",
                           f"{OCTET}; transfer-syntax=1.2.840.10008.1.2.1"):  # fmt: skip
                await get(client, url_of(ds) + "/frames/1", accept, status=406)
            # RLE, two frames
            ds = find(archive_files, "1.2.840.10008.1.2.5")
            stored = dcmread(archive_files.paths[ds.SOPInstanceUID]).PixelData
            frames = list(generate_frames(stored, number_of_frames=2))
            got = await parts(
                client, url_of(ds) + "/frames/2,1", 'multipart/related; type="image/dicom-rle"'
            )
            assert [d for _, d in got] == [frames[1], frames[0]]
            assert (
                got[0][0]["Content-Type"] == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
            )
    finally:
        index.close()


@pytest.mark.parametrize("frames,status", [("0", 400), ("-1", 400), ("1,a", 400), ("", 404),
                                           ("4", 404), (",".join(["1"] * 1001), 400),
                                           ("1,,2", 400), ("99999999999", 400)])  # fmt: skip
async def test_bad_frame_lists(archive_files: Archive, frames: str, status: int) -> None:
    index = archive_files.index()
    try:
        async with web_client(archive_files.root, index) as client:
            ds = find(archive_files, "1.2.840.10008.1.2.1", frames=3)
            response = await client.session.get(raw_url(client, url_of(ds) + f"/frames/{frames}"))
            assert response.status == status, frames
    finally:
        index.close()


async def test_bulkdata(archive_files: Archive) -> None:
    index = archive_files.index()
    try:
        async with web_client(archive_files.root, index) as client:
            ds = find(archive_files, "1.2.840.10008.1.2.1", frames=3)
            # the URIs the metadata gives
            response, _ = await get(client, url_of(ds) + "/metadata", None)
            [doc] = await response.json(content_type=None)
            uri = doc["7FE00010"]["BulkDataURI"]
            response, body = await get(client, uri, "application/octet-stream")
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert body == ds.PixelData
            [(_, data)] = await parts(client, uri, OCTET)
            assert data == ds.PixelData
            # encapsulated pixel data: its frames
            jp2 = find(archive_files, "1.2.840.10008.1.2.4.91")
            got = await parts(
                client, url_of(jp2) + "/bulkdata/7FE00010", 'multipart/related; type="*/*"'
            )
            assert len(got) == 1
            # a value inside a sequence
            doc_ds = next(d for d in archive_files.datasets.values() if "00400275" in d)
            response, _ = await get(client, url_of(doc_ds) + "/metadata", None)
            [doc] = await response.json(content_type=None)
            uri = doc["00400275"]["Value"][0]["00420011"]["BulkDataURI"]
            response, body = await get(client, uri, "application/octet-stream")
            assert body == bytes(range(256)) * 8
            for bad, status in (("00400275/5/00420011", 404), ("00100010", 404), ("zz", 400),
                                ("00400275/0", 400), ("..%2F..%2Fetc", 400)):  # fmt: skip
                response = await client.session.get(
                    raw_url(client, url_of(doc_ds) + f"/bulkdata/{bad}")
                )
                assert response.status == status, bad
    finally:
        index.close()


async def test_frames_of_instances_without_pixels_or_unknown(archive_files: Archive) -> None:
    index = archive_files.index()
    try:
        async with web_client(archive_files.root, index) as client:
            ds = find(archive_files, "1.2.840.10008.1.2.1", frames=3)
            await get(
                client,
                f"{ROOT}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{generate_uid()}/frames/1",
                OCTET,
                status=404,
            )
    finally:
        index.close()
