"""dicomnet against pynetdicom over 127.0.0.1, both directions: a pynetdicom AE as SCU into the
dicomnet server (echo, storage of several transfer syntaxes compared byte for byte, an
asynchronous operations window, rejections), and dicomnet's client into a pynetdicom SCP (echo,
storage of files and data sets, release and abort as pynetdicom sees them), with a small maximum
PDU length so messages are fragmented both ways."""

from __future__ import annotations

import array
import asyncio
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from dicomnet import DicomClient, DicomServer, ServerLimits, Status
from dicomnet.services.storage import StorageService
from dicomnet.uids import VERIFICATION
from tests.helpers import free_port, make_ct, require_pynetdicom, write_ct
from tests.interop.conftest import ThreadedServer

pytestmark = pytest.mark.interop

# pydicom's test files: the transfer syntax each is encoded with is the one proposed for it.
FILES = {
    "CT_small.dcm": (CTImageStorage, ExplicitVRLittleEndian),
    "MR_small.dcm": (MRImageStorage, ExplicitVRLittleEndian),
    "SC_rgb_jpeg_dcmtk.dcm": (SecondaryCaptureImageStorage, JPEGBaseline8Bit),
    "SC_rgb_rle.dcm": (SecondaryCaptureImageStorage, RLELossless),
    "MR_small_bigendian.dcm": (MRImageStorage, ExplicitVRBigEndian),
}

SMALL_PDU = 16384


def dataset_bytes(path: Path | str) -> bytes:
    """The data set of a Part 10 file: everything after the preamble, "DICM" and the group 0002
    elements (explicit VR little endian, PS3.10 §7.1). File meta may differ between two copies
    of one instance; the data set must not."""
    data = Path(path).read_bytes()
    assert data[128:132] == b"DICM", f"{path} has no DICM prefix"
    pos = 132
    while pos + 8 <= len(data):
        group, _elem, vr = struct.unpack_from("<HH2s", data, pos)
        if group != 0x0002:
            break
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8 + length
    return data[pos:]


def _pixel_values(ds: Dataset, transfer_syntax: UID) -> list[int]:
    """Native pixel data as numbers (no NumPy): the bytes are read in the transfer syntax's
    byte order, so a big endian original and its little endian copy compare equal."""
    words = array.array("H" if ds.BitsAllocated == 16 else "B", ds.PixelData)
    if not UID(transfer_syntax).is_little_endian and words.itemsize > 1:
        words.byteswap()
    return words.tolist()


def _stored(store: Path, path: str) -> Path:
    ds = dcmread(path, stop_before_pixels=True)
    return store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


class LimitedServer(ThreadedServer):
    """The interop fixture's threaded dicomnet server, with explicit ``ServerLimits``."""

    def __init__(self, factory: Any, limits: ServerLimits) -> None:
        super().__init__(factory)
        self.limits = limits

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with DicomServer(self.factory, "127.0.0.1", 0, limits=self.limits) as server:
            self.server = server
            self.port = server.port
            self._ready.set()
            await self._stop.wait()


def _scu_ae(*contexts: tuple[str, str]) -> Any:
    require_pynetdicom()
    from pynetdicom import AE

    ae = AE(ae_title="PYNETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for abstract, ts in contexts:
        ae.add_requested_context(abstract, ts)
    return ae


@pytest.fixture
def chunked_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file's data set as it is on disk (not decoded and re-encoded), so the
    stored copy can be compared byte for byte."""
    require_pynetdicom()
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


# --- pynetdicom SCU -> dicomnet server -----------------------------------------------------------


def test_pynetdicom_echo(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = threaded_server(StorageService.factory(tmp_path, fsync=False))
    ae = _scu_ae((VERIFICATION, ExplicitVRLittleEndian))
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMNET")
    try:
        assert assoc.is_established
        for _ in range(3):
            assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released


def test_pynetdicom_stores_files_byte_identical(  # type: ignore[no-untyped-def]
    threaded_server, chunked_send, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    server = threaded_server(StorageService.factory(store, fsync=False))
    ae = _scu_ae(*FILES.values())
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMNET")
    try:
        assert assoc.is_established
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        assert accepted == set(FILES.values())
        for name in FILES:
            path = str(get_testdata_file(name))
            status = assoc.send_c_store(path)
            assert status.Status == 0x0000, name
            # Some test files share an instance UID: compare before the next one replaces it.
            out = _stored(store, path)
            assert dataset_bytes(out) == dataset_bytes(path), name
            meta = dcmread(out, stop_before_pixels=True).file_meta
            assert meta.TransferSyntaxUID == FILES[name][1], name
    finally:
        assoc.release()


def _associate_with_window(port: int, *contexts: tuple[str, str]) -> Any:
    from pynetdicom.pdu_primitives import AsynchronousOperationsWindowNegotiation

    ae = _scu_ae(*contexts)
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 8
    window.maximum_number_operations_performed = 8
    return ae.associate("127.0.0.1", port, ae_title="DICOMNET", ext_neg=[window])


def test_pynetdicom_async_window_and_contexts(  # type: ignore[no-untyped-def]
    threaded_server, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    server = threaded_server(StorageService.factory(store, fsync=False, max_operations_performed=4))
    assoc = _associate_with_window(
        server.port,
        (VERIFICATION, ImplicitVRLittleEndian),
        (CTImageStorage, ImplicitVRLittleEndian),
        (CTImageStorage, ExplicitVRLittleEndian),
        (MRImageStorage, ExplicitVRLittleEndian),
        ("1.2.3.4.5.6.7", ExplicitVRLittleEndian),  # no such SOP class: rejected
    )
    try:
        assert assoc.is_established
        # A proposed window is answered (PS3.7 D.3.3.3), never larger than what was offered.
        from pynetdicom.pdu_primitives import AsynchronousOperationsWindowNegotiation

        answered = [
            item
            for item in assoc.acceptor.user_information
            if isinstance(item, AsynchronousOperationsWindowNegotiation)
        ]
        assert len(answered) == 1
        assert 1 <= answered[0].maximum_number_operations_invoked <= 8
        assert 1 <= answered[0].maximum_number_operations_performed <= 8
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        assert (CTImageStorage, ImplicitVRLittleEndian) in accepted
        assert (CTImageStorage, ExplicitVRLittleEndian) in accepted
        assert (MRImageStorage, ExplicitVRLittleEndian) in accepted
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == ["1.2.3.4.5.6.7"]
        sent = [make_ct(rows=16, columns=16) for _ in range(6)]
        for i, ds in enumerate(sent):
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if i % 2 else ExplicitVRLittleEndian
            )
            assert assoc.send_c_store(ds, msg_id=i + 1).Status == 0x0000
        mr = make_ct(rows=8, columns=8)
        mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
        mr.Modality = "MR"
        assert assoc.send_c_store(mr, msg_id=50).Status == 0x0000
        assert assoc.send_c_echo(msg_id=99).Status == 0x0000
    finally:
        assoc.release()
    for i, ds in enumerate([*sent, mr]):
        got = dcmread(
            store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        )
        assert got.SOPClassUID == ds.SOPClassUID
        assert got.PixelData == ds.PixelData
        assert got.file_meta.TransferSyntaxUID == (
            ImplicitVRLittleEndian if i % 2 else ExplicitVRLittleEndian
        )


def test_pynetdicom_async_window_answer_per_ps37(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = threaded_server(
        StorageService.factory(tmp_path, fsync=False, max_operations_performed=4)
    )
    assoc = _associate_with_window(server.port, (VERIFICATION, ImplicitVRLittleEndian))
    try:
        assert assoc.is_established
        # We offered to invoke 8; the acceptor performs at most 4, so it allows us 4.
        assert assoc.acceptor.asynchronous_operations[0] == 4
    finally:
        assoc.release()


def _rejection(ae: Any, port: int, called: str) -> tuple[Any, list[Any]]:
    from pynetdicom import evt
    from pynetdicom.pdu import A_ASSOCIATE_RJ

    pdus: list[Any] = []

    def on_pdu(event: Any) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            pdus.append(event.pdu)

    assoc = ae.associate(
        "127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)]
    )
    return assoc, pdus


def test_pynetdicom_rejected_called_ae(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = threaded_server(StorageService.factory(tmp_path, ae_title="STORESCP", fsync=False))
    ae = _scu_ae((VERIFICATION, ExplicitVRLittleEndian))
    assoc, rejections = _rejection(ae, server.port, "OTHER")
    assert assoc.is_rejected
    assert not assoc.is_established
    # PS3.8 §9.3.4: rejected-permanent (1), DICOM UL service-user (1), called AE title not
    # recognized (7).
    assert [(p.result, p.source, p.reason_diagnostic) for p in rejections] == [(1, 1, 7)]
    # The right title is accepted by the same server.
    ok = ae.associate("127.0.0.1", server.port, ae_title="STORESCP")
    assert ok.is_established
    assert ok.send_c_echo().Status == 0
    ok.release()


def test_pynetdicom_rejected_calling_ae(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    factory = StorageService.factory(tmp_path, allowed_calling_aes=["GOODSCU"], fsync=False)
    server = threaded_server(factory)
    ae = _scu_ae((VERIFICATION, ExplicitVRLittleEndian))
    assoc, rejections = _rejection(ae, server.port, "DICOMNET")
    assert assoc.is_rejected
    # Calling AE title not recognized (3).
    assert [(p.result, p.source, p.reason_diagnostic) for p in rejections] == [(1, 1, 3)]
    ae.ae_title = "GOODSCU"
    ok = ae.associate("127.0.0.1", server.port, ae_title="DICOMNET")
    assert ok.is_established
    ok.release()


def test_pynetdicom_into_small_max_pdu(chunked_send, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """dicomnet advertises a 16 KiB maximum: pynetdicom must fragment to fit, and our
    reassembly puts the pieces back together."""
    from pynetdicom import evt
    from pynetdicom.pdu import P_DATA_TF

    store = tmp_path / "store"
    server = LimitedServer(
        StorageService.factory(store, fsync=False), ServerLimits(max_pdu_length=SMALL_PDU)
    ).start()
    sent_lengths: list[int] = []

    def on_sent(event: Any) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            sent_lengths.append(event.pdu.pdu_length)

    src = tmp_path / "in" / "big.dcm"
    ds = write_ct(src, rows=256, columns=256)  # 128 KiB of pixel data
    try:
        ae = _scu_ae((CTImageStorage, ExplicitVRLittleEndian))
        assoc = ae.associate(
            "127.0.0.1",
            server.port,
            ae_title="DICOMNET",
            max_pdu=SMALL_PDU,
            evt_handlers=[(evt.EVT_PDU_SENT, on_sent)],
        )
        try:
            assert assoc.is_established
            assert assoc.acceptor.maximum_length == SMALL_PDU
            assert assoc.send_c_store(str(src)).Status == 0
        finally:
            assoc.release()
    finally:
        server.stop()
    assert len(sent_lengths) >= 8
    assert max(sent_lengths) <= SMALL_PDU
    assert dataset_bytes(_stored(store, str(src))) == dataset_bytes(src)
    assert ds.SOPInstanceUID in _stored(store, str(src)).name


# --- dicomnet client -> pynetdicom SCP -----------------------------------------------------------


@dataclass
class PynetdicomSCP:
    port: int
    stored: list[tuple[str, str, bytes, Dataset]] = field(default_factory=list)
    echoes: int = 0
    pdata_lengths: list[int] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    aborted: threading.Event = field(default_factory=threading.Event)


@contextmanager
def pynetdicom_scp(max_pdu: int = 16382) -> Iterator[PynetdicomSCP]:
    """A pynetdicom storage SCP on 127.0.0.1 that keeps what it receives in memory."""
    require_pynetdicom()
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
    from pynetdicom.pdu import P_DATA_TF

    scp = PynetdicomSCP(free_port())
    ae = AE(ae_title="PYNETSCP")
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_supported_context(VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    # pynetdicom accepts the first of its own syntaxes that was proposed: explicit VR little
    # endian first, as dicomnet proposes for uncompressed files.
    preferred = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
    syntaxes = preferred + [ts for ts in ALL_TRANSFER_SYNTAXES if ts not in preferred]
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)

    def on_store(event: Any) -> int:
        raw = event.request.DataSet.getvalue()
        scp.stored.append(
            (
                event.request.AffectedSOPInstanceUID,
                event.context.transfer_syntax,
                raw,
                event.dataset,
            )
        )
        return 0x0000

    def on_echo(event: Any) -> int:
        scp.echoes += 1
        return 0x0000

    def on_pdu(event: Any) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            scp.pdata_lengths.append(event.pdu.pdu_length)

    handlers: list[tuple[Any, Callable[..., Any]]] = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_PDU_RECV, on_pdu),
        (evt.EVT_RELEASED, lambda event: scp.released.set()),
        (evt.EVT_ABORTED, lambda event: scp.aborted.set()),
    ]
    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=handlers)
    try:
        yield scp
    finally:
        server.shutdown()


async def test_client_echo_and_release_into_pynetdicom() -> None:
    with pynetdicom_scp() as scp:
        async with DicomClient("127.0.0.1", scp.port, "DICOMNET", "PYNETSCP") as client:
            assert await client.c_echo() == Status.SUCCESS
            assert await client.c_echo() == Status.SUCCESS
        assert await asyncio.to_thread(scp.released.wait, 10)
        assert not scp.aborted.is_set()
        assert scp.echoes == 2


async def test_client_abort_seen_by_pynetdicom() -> None:
    with pynetdicom_scp() as scp:
        client = DicomClient("127.0.0.1", scp.port, "DICOMNET", "PYNETSCP")
        assert await client.c_echo() == Status.SUCCESS
        await client.abort()
        assert await asyncio.to_thread(scp.aborted.wait, 10)
        assert not scp.released.is_set()


async def test_client_stores_files_into_pynetdicom() -> None:
    names = list(FILES)
    with pynetdicom_scp() as scp:
        async with DicomClient("127.0.0.1", scp.port, "DICOMNET", "PYNETSCP") as client:
            for name in names:
                path = get_testdata_file(name)
                assert await client.c_store(path) == Status.SUCCESS, name
        assert await asyncio.to_thread(scp.released.wait, 10)
    assert len(scp.stored) == len(names)
    for name, (uid, ts, raw, received) in zip(names, scp.stored, strict=True):
        path = str(get_testdata_file(name))
        original = dcmread(path)
        assert uid == original.SOPInstanceUID, name
        if ts == FILES[name][1]:
            # Sent as it is on disk.
            assert raw == dataset_bytes(path), name
        else:
            # pynetdicom chose another uncompressed syntax: re-encoded, same content.
            assert not FILES[name][1].is_compressed, (name, ts)
            assert received.PatientName == original.PatientName, name
            assert _pixel_values(received, ts) == _pixel_values(original, FILES[name][1]), name
    assert [ts for _uid, ts, _raw, _ds in scp.stored][:4] == [v[1] for v in FILES.values()][:4]


async def test_client_stores_dataset_into_pynetdicom() -> None:
    sent = make_ct(rows=32, columns=32)
    with pynetdicom_scp() as scp:
        async with DicomClient("127.0.0.1", scp.port, "DICOMNET", "PYNETSCP") as client:
            assert await client.c_store(sent) == Status.SUCCESS
    [(uid, ts, _raw, received)] = scp.stored
    assert uid == sent.SOPInstanceUID
    assert ts == ExplicitVRLittleEndian
    assert received == sent
    assert received.PixelData == sent.PixelData


async def test_client_fragments_for_small_peer_max_pdu(tmp_path: Path) -> None:
    """pynetdicom accepts PDUs of at most 16 KiB: a 512 KiB instance goes in many P-DATA-TF
    PDUs, none larger, and arrives whole."""
    src = tmp_path / "big.dcm"
    write_ct(src, rows=512, columns=512)
    with pynetdicom_scp(max_pdu=SMALL_PDU) as scp:
        async with DicomClient(
            "127.0.0.1", scp.port, "DICOMNET", "PYNETSCP", max_pdu_length=SMALL_PDU
        ) as client:
            assert await client.c_store(src) == Status.SUCCESS
            assert client.negotiated is not None
            assert client.negotiated.peer_max_pdu_length == SMALL_PDU
    [(_uid, _ts, raw, _ds)] = scp.stored
    assert raw == dataset_bytes(src)
    assert max(scp.pdata_lengths) <= SMALL_PDU
    assert len(scp.pdata_lengths) >= (512 * 512 * 2) // SMALL_PDU
