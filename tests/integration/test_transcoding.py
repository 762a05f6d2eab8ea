"""Issue 10 over 127.0.0.1, dicomnet at both ends: a ``DicomClient`` sending to a server that
accepts images only in Explicit VR Little Endian (compressed files decompressed, a big endian
one re-encoded, in the codec workers a few requests ahead, their temporary files removed), and
``StorageService(store_as=...)`` storing lossless-compressed, keeping what it cannot or should
not convert, and saying why in the log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.negotiation import AssociationDecision, AssociationRequest
from dicomnet.requests import CStoreRequest
from dicomnet.service import ReceivedCStore
from dicomnet.services.storage import StorageService, open_index
from dicomnet.uids import UNCOMPRESSED, is_storage
from tests.helpers import make_ct

np = pytest.importorskip("numpy")

from dicomnet.pixels import Action, TranscodePool, can_encode, transcode_file  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (can_encode("jpeg-ls-lossless") and can_encode("jpeg2000-lossless")),
    reason="the codecs extra is not installed",
)

JLS, J2K, RLE = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"


@pytest.fixture
async def pool() -> AsyncIterator[TranscodePool]:
    async with TranscodePool(max_workers=2) as workers:
        yield workers


class ExplicitOnly(StorageService):
    """Takes storage SOP classes in Explicit VR Little Endian only, like many viewers."""

    async def on_association_request(self, request: AssociationRequest) -> AssociationDecision:
        for pc in request.presentation_contexts:
            if is_storage(pc.abstract_syntax):
                pc.accept([ExplicitVRLittleEndian])
            else:
                pc.accept(UNCOMPRESSED)
        return request.accept()


def _sources(folder: Path, syntaxes: list[str]) -> dict[Path, np.ndarray]:
    """CT files in ``syntaxes`` (converted by dicomnet from Explicit VR Little Endian), with
    the pixels each was made from."""
    plain = folder / "plain"
    plain.mkdir(parents=True)
    out: dict[Path, np.ndarray] = {}
    for i, syntax in enumerate(syntaxes):
        ds = make_ct(rows=48, columns=48)
        source = plain / f"{i}.dcm"
        ds.save_as(source, enforce_file_format=True)
        target = folder / f"{i}.dcm"
        transcode_file(source, target, syntax)
        out[target] = dcmread(source).pixel_array
    return out


async def test_client_decompresses_for_a_peer_that_takes_only_explicit_little_endian(
    tmp_path: Path, pool: TranscodePool
) -> None:
    store = tmp_path / "store"
    factory = ExplicitOnly.factory(store, fsync=False)
    sources = _sources(tmp_path / "in", [JLS, J2K, RLE, ExplicitVRBigEndian, JLS, RLE])
    spool = tmp_path / "spool"
    spool.mkdir()
    requests = [CStoreRequest.from_file(path) for path in sources]
    async with DicomServer(factory, port=0) as server:
        async with DicomClient("127.0.0.1", server.port, transcode_pool=pool) as client:
            client.temp_dir = spool
            for request in requests:
                await client.add_request(request)
            await client.send()
    for request, path in zip(requests, sources, strict=True):
        assert request.error is None and request.status == Status.SUCCESS, request.error
        assert request.transcoded is not None
        expected = (
            Action.REENCODE
            if request.transfer_syntax == ExplicitVRBigEndian
            else (Action.DECOMPRESS)
        )
        assert request.transcoded.action is expected, path
    stored = {p.stem: dcmread(p) for p in store.rglob("*.dcm") if ".incoming" not in p.parts}
    for request, pixels in zip(requests, sources.values(), strict=True):
        arrived = stored[request.sop_instance_uid]
        assert arrived.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(arrived.pixel_array, pixels)
    assert list(spool.iterdir()) == []  # every converted file removed once it was answered


async def test_client_reports_a_file_that_cannot_be_converted_and_goes_on(
    tmp_path: Path, pool: TranscodePool
) -> None:
    store = tmp_path / "store"
    factory = ExplicitOnly.factory(store, fsync=False)
    sources = _sources(tmp_path / "in", [JLS, JLS])
    bad, good = list(sources)
    raw = bytearray(bad.read_bytes())
    raw[-200:-100] = b"\xff" * 100  # a corrupt code stream
    bad.write_bytes(bytes(raw))
    requests = [CStoreRequest.from_file(bad), CStoreRequest.from_file(good)]
    async with DicomServer(factory, port=0) as server:
        async with DicomClient("127.0.0.1", server.port, transcode_pool=pool) as client:
            for request in requests:
                await client.add_request(request)
            await client.send()
    assert requests[0].error is not None and "cannot be decoded" in str(requests[0].error)
    assert requests[1].status == Status.SUCCESS
    assert bad.read_bytes() == bytes(raw)  # the source is never altered


async def test_store_as_keeps_what_it_should_not_or_cannot_convert(
    tmp_path: Path, pool: TranscodePool, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    index = open_index(store)
    factory = StorageService.factory(
        store, fsync=True, index=index, store_as="jpeg-ls-lossless", transcode_pool=pool
    )
    plain = make_ct(rows=64, columns=64)
    tiny = make_ct(rows=2, columns=2)  # CharLS takes nothing under 4x4: kept as received
    report = make_ct(rows=8, columns=8)
    del report.PixelData  # no pixels: kept
    saved: dict[str, Path] = {}

    def remember(request: ReceivedCStore, path: Path) -> None:
        saved[request.sop_instance_uid] = path

    factory.on_stored = staticmethod(remember)  # type: ignore[assignment]
    caplog.set_level(logging.INFO, logger="dicomnet.services.storage")
    async with DicomServer(factory, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            for ds in (plain, tiny, report):
                assert await client.c_store(ds) == Status.SUCCESS
    assert factory.index_writer is not None
    factory.index_writer.close()
    rows = {r.sop_instance_uid: r.transfer_syntax_uid for r in index.records()}
    index.close()
    expected = {
        str(plain.SOPInstanceUID): JLS,
        str(tiny.SOPInstanceUID): ExplicitVRLittleEndian,
        str(report.SOPInstanceUID): ExplicitVRLittleEndian,
    }
    assert rows == expected
    for uid, syntax in expected.items():
        assert dcmread(saved[uid]).file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(dcmread(saved[str(plain.SOPInstanceUID)]).pixel_array, plain.pixel_array)
    assert f"{tiny.SOPInstanceUID} kept in Explicit VR Little Endian, not converted" in caplog.text
    assert "under 4x4" in caplog.text
    assert not list(store.rglob("*.converted"))


def test_store_as_refuses_a_lossy_syntax(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lossy"):
        StorageService.factory(tmp_path, store_as="jpeg-baseline")
