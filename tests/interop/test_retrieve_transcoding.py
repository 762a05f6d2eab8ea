"""Issue 10: C-MOVE and C-GET from ``dicomnet serve`` holding JPEG-LS, JPEG 2000 and RLE
instances to peers that accept only uncompressed syntaxes: DCMTK's storescp (C-MOVE, started by
movescu), a pynetdicom storage SCP (C-MOVE, started by pynetdicom), DCMTK's getscu and pynetdicom
(C-GET). Every instance arrives decompressed with the pixels it was made from; one instance whose
JPEG 2000 code stream no decoder can read (pydicom's JPEG2000-embedded-sequence-delimiter.dcm,
moved into the study) is a failed sub-operation with the reason in the log, and the others go
on (final status 0xB000)."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from tests.cli.conftest import Serve
from tests.helpers import free_port, make_ct, require_pynetdicom, require_tool, run
from tests.interop.conftest import DcmtkStorescp

np = pytest.importorskip("numpy")

from dicomnet.pixels import can_decode, can_encode, transcode_file  # noqa: E402

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not (can_encode("jpeg2000-lossless") and can_decode("1.2.840.10008.1.2.4.80")),
        reason="the codecs extra is not installed",
    ),
]

AET = "ARCHIVE"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
JLS, J2K, RLE = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"


@dataclass
class Node:
    serve: Serve
    storescp: DcmtkStorescp
    study: str
    pixels: dict[str, Any]  # SOP Instance UID -> the pixel array it was made from
    stored: dict[str, str]  # SOP Instance UID -> transfer syntax in the archive
    broken: str  # the SOP Instance UID no decoder can read
    pynetdicom_port: int


def _compress(source: Path, target: Path, syntax: str) -> None:
    """JPEG-LS and RLE by DCMTK's own encoders, JPEG 2000 by dicomnet (DCMTK has none)."""
    if syntax == JLS:
        done = run([require_tool("dcmcjpls"), str(source), str(target)])
    elif syntax == RLE:
        done = run([require_tool("dcmcrle"), str(source), str(target)])
    else:
        transcode_file(source, target, syntax)
        return
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("retrieve-transcoding")
    root = base / "archive"
    study, series = generate_uid(), generate_uid()
    pixels: dict[str, Any] = {}
    stored: dict[str, str] = {}
    plain = base / "plain"
    plain.mkdir()
    for number, syntax in enumerate([JLS, JLS, J2K, J2K, RLE, RLE], 1):
        ds = make_ct(64, 64, study_uid=study, series_uid=series)
        ds.InstanceNumber = number
        source = plain / f"{number}.dcm"
        ds.save_as(source, enforce_file_format=True)
        uid = str(ds.SOPInstanceUID)
        folder = root / study / series
        folder.mkdir(parents=True, exist_ok=True)
        _compress(source, folder / f"{uid}.dcm", syntax)
        pixels[uid] = dcmread(source).pixel_array
        stored[uid] = syntax
    # A JPEG 2000 code stream that no decoder can read, moved into the study.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        broken = dcmread(str(get_testdata_file("JPEG2000-embedded-sequence-delimiter.dcm")))
    broken.StudyInstanceUID, broken.SeriesInstanceUID = study, series
    broken.save_as(root / study / series / f"{broken.SOPInstanceUID}.dcm")
    storescp = DcmtkStorescp(base / "storescp")  # its default: uncompressed syntaxes only
    pynetdicom_port = free_port()
    try:
        serve = Serve(
            root,
            "--aet",
            AET,
            "--no-fsync",
            "--peer",
            f"STORESCP=127.0.0.1:{storescp.port}",
            "--peer",
            f"PYNSTORE=127.0.0.1:{pynetdicom_port}",
        )
    except BaseException:
        storescp.stop()
        raise
    try:
        yield Node(
            serve, storescp, study, pixels, stored, str(broken.SOPInstanceUID), pynetdicom_port
        )
    finally:
        serve.stop()
        storescp.stop()


def check_arrived(node: Node, datasets: list[Dataset]) -> None:
    """Every instance but the broken one, once, uncompressed, with its pixels."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    assert sorted(by_uid) == sorted(node.pixels)
    assert len(datasets) == len(node.pixels)
    for uid, ds in by_uid.items():
        assert ds.file_meta.TransferSyntaxUID in UNCOMPRESSED, uid
        assert np.array_equal(ds.pixel_array, node.pixels[uid]), (uid, node.stored[uid])


def check_failure_logged(node: Node) -> None:
    log = node.serve.log
    assert node.broken in log and "cannot be decoded as JPEG 2000" in log, log[-3000:]


def _retrieve(tool: str, node: Node, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            require_tool(tool),
            "-v",
            "-S",
            "-aec",
            AET,
            *extra,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={node.study}",
            "127.0.0.1",
            str(node.serve.port),
        ],
        timeout=120,
    )


def test_movescu_to_an_uncompressed_only_storescp(node: Node) -> None:
    for old in node.storescp.folder.iterdir():
        old.unlink()
    result = _retrieve("movescu", node, "-aet", "MOVESCU", "-aem", "STORESCP")
    out = result.stdout + result.stderr
    assert "Received Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in (
        out
    ), out
    check_arrived(node, [dcmread(p) for p in node.storescp.folder.iterdir()])
    check_failure_logged(node)


def test_getscu_proposing_uncompressed_only(node: Node, tmp_path: Path) -> None:
    result = _retrieve("getscu", node, "-od", str(tmp_path))
    out = result.stdout + result.stderr
    assert "Received C-GET Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in (out), out
    check_arrived(node, [dcmread(p) for p in tmp_path.iterdir()])


def _pynetdicom_scu(node: Node) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    return ae


def _identifier(node: Node) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = node.study
    return ds


def _final_counts(results: list[tuple[Any, Any]]) -> tuple[int, int, int]:
    final = results[-1][0]
    return (
        int(final.Status),
        int(final.NumberOfCompletedSuboperations),
        int(final.NumberOfFailedSuboperations),
    )


def test_c_move_to_an_uncompressed_only_pynetdicom_scp(node: Node) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt

    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    dest = AE(ae_title="PYNSTORE")
    dest.add_supported_context(CTImageStorage, UNCOMPRESSED)
    scp = dest.start_server(
        ("127.0.0.1", node.pynetdicom_port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    try:
        ae = _pynetdicom_scu(node)
        ae.add_requested_context(STUDY_MOVE, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", node.serve.port, ae_title=AET)
        assert assoc.is_established
        try:
            results = list(assoc.send_c_move(_identifier(node), "PYNSTORE", STUDY_MOVE))
        finally:
            assoc.release()
    finally:
        scp.shutdown()
    assert _final_counts(results) == (0xB000, len(node.pixels), 1)
    failed = results[-1][1]
    assert failed is not None and failed.FailedSOPInstanceUIDList == node.broken
    check_arrived(node, received)


def test_c_get_by_pynetdicom_proposing_uncompressed_only(node: Node) -> None:
    require_pynetdicom()
    from pynetdicom import build_role, evt

    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = _pynetdicom_scu(node)
    ae.add_requested_context(STUDY_GET, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, UNCOMPRESSED)
    assoc = ae.associate(
        "127.0.0.1",
        node.serve.port,
        ae_title=AET,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        results = list(assoc.send_c_get(_identifier(node), STUDY_GET))
    finally:
        assoc.release()
    assert _final_counts(results) == (0xB000, len(node.pixels), 1)
    check_arrived(node, received)


def test_the_archive_kept_its_files_as_they_were(node: Node) -> None:
    """Converting for a peer works on a copy: the stored files are untouched."""
    for path in node.serve.stored():
        uid = path.stem
        if uid in node.stored:
            assert (
                dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
                == (node.stored[uid])
            )
    assert not list(node.serve.storage.rglob("*.converted"))
