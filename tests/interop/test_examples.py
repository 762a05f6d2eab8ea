"""The two seed samples (issue 2, item 7) run as programs against real peers: the storage SCP
(examples/store_scp.py) with DCMTK echoscu/storescu and pynetdicom, and the storage SCU
(examples/store_scu.py) into DCMTK storescp."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from dicomnet import DicomClient, Status, StatusCategory
from dicomnet.dimse.status import category
from dicomnet.uids import VERIFICATION
from tests.helpers import echo_statuses, free_port, make_ct, require_pynetdicom, require_tool, run
from tests.helpers import wait_for_port as _wait_for_port
from tests.interop.test_pynetdicom import dataset_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CT_SMALL = str(get_testdata_file("CT_small.dcm"))
JPEG_FILE = str(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))  # JPEG baseline (process 1)

# Issue 2, item 7: the storage syntaxes in the sample's order of preference, and Verification's.
STORAGE_SYNTAXES = [
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
]
VERIFICATION_SYNTAXES = [ExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian]


@pytest.fixture
def seed_scp(tmp_path: Path) -> Iterator[int]:
    """examples/store_scp.py on a free port, storing into tmp_path/DICOM; yields the port."""
    port = free_port()
    log = open(tmp_path / "store_scp.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "store_scp.py"), str(port)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc)  # type: ignore[arg-type]
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _landed(root: Path, path: str) -> Path:
    ds = dcmread(path, stop_before_pixels=True)
    return root / "DICOM" / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def _assert_no_partial_files(root: Path) -> None:
    """The temporary folder holds no data: only the empty files dicomnet creates ahead of time."""
    leftovers = [p for p in (root / "DICOM" / ".incoming").rglob("*") if p.is_file()]
    assert [p for p in leftovers if p.stat().st_size > 0] == []


def _stored_files(root: Path) -> list[Path]:
    return sorted((root / "DICOM").rglob("*.dcm")) if (root / "DICOM").exists() else []


# --- the storage SCP sample against DCMTK ----------------------------------------------------------


@pytest.mark.interop
def test_echoscu_called_ae(seed_scp: int) -> None:
    echoscu = require_tool("echoscu")
    ok = run([echoscu, "-v", "-aec", "STORESCP", "127.0.0.1", str(seed_scp)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert echo_statuses(ok) == ["Success"], ok.stdout + ok.stderr
    wrong = run([echoscu, "-v", "-aec", "OTHER", "127.0.0.1", str(seed_scp)])
    output = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0, output
    assert "Association Rejected" in output, output
    assert "Called AE Title Not Recognized" in output, output


@pytest.mark.interop
def test_storescu_ct_and_jpeg_land_by_study(seed_scp: int, tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    for path, option in ((CT_SMALL, []), (JPEG_FILE, ["-xy"])):
        result = run([storescu, "-aec", "STORESCP", *option, "127.0.0.1", str(seed_scp), path])
        assert result.returncode == 0, path + result.stdout + result.stderr
        out = _landed(tmp_path, path)
        assert out.exists(), (path, _stored_files(tmp_path))
        # Sent in its own transfer syntax and kept as it came: storescu re-encodes the data set
        # and leaves out the Data Set Trailing Padding (FFFC,FFFC) element, nothing else.
        got, sent = dataset_bytes(out), dataset_bytes(path)
        assert got == sent[: len(got)], path
        assert len(got) == len(sent) or sent[len(got) : len(got) + 4] == b"\xfc\xff\xfc\xff"
        sent_ts = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID == sent_ts
    assert len(_stored_files(tmp_path)) == 2
    _assert_no_partial_files(tmp_path)


# --- the storage SCP sample against pynetdicom -------------------------------------------------------


def _pynetdicom_ae(*contexts: tuple[str, str]) -> Any:
    require_pynetdicom()
    from pynetdicom import AE

    ae = AE(ae_title="PYNETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for abstract, ts in contexts:
        ae.add_requested_context(abstract, ts)
    return ae


@pytest.mark.interop
def test_pynetdicom_echo_store_and_reject(
    seed_scp: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_pynetdicom()
    from pynetdicom import _config, evt
    from pynetdicom.pdu import A_ASSOCIATE_RJ

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send files as they are
    jpeg_class = dcmread(JPEG_FILE, stop_before_pixels=True).SOPClassUID
    ae = _pynetdicom_ae(
        (VERIFICATION, ExplicitVRLittleEndian),
        (CTImageStorage, ExplicitVRLittleEndian),
        (jpeg_class, JPEGBaseline8Bit),
    )
    rejections: list[Any] = []

    def on_pdu(event: Any) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rejections.append(event.pdu)

    wrong = ae.associate(
        "127.0.0.1", seed_scp, ae_title="OTHER", evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)]
    )
    assert wrong.is_rejected
    # Rejected permanent (1), by the service user (1): called AE title not recognized (7).
    assert [(p.result, p.source, p.reason_diagnostic) for p in rejections] == [(1, 1, 7)]

    assoc = ae.associate("127.0.0.1", seed_scp, ae_title="STORESCP")
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        for path in (CT_SMALL, JPEG_FILE):
            assert assoc.send_c_store(path).Status == 0, path
    finally:
        assoc.release()
    for path in (CT_SMALL, JPEG_FILE):
        assert dataset_bytes(_landed(tmp_path, path)) == dataset_bytes(path), path


@pytest.mark.interop
def test_seed_scp_transfer_syntaxes(seed_scp: int) -> None:
    """Every syntax of item 7 is accepted for a storage class, and nothing else; Verification
    takes the three uncompressed ones; the sample's preference order decides among several."""
    extra_storage = [DeflatedExplicitVRLittleEndian, "1.2.840.10008.1.2.4.201"]  # HTJ2K lossless
    contexts = [
        *((CTImageStorage, ts) for ts in STORAGE_SYNTAXES + extra_storage),
        *((VERIFICATION, ts) for ts in [*VERIFICATION_SYNTAXES, JPEGBaseline8Bit]),
        ("1.2.3.4.5.6.7.8", ExplicitVRLittleEndian),  # not a storage SOP class
    ]
    ae = _pynetdicom_ae()
    for abstract, ts in contexts:
        ae.add_requested_context(abstract, ts)
    # One context offering several syntaxes: the sample picks the first of its own list.
    ae.add_requested_context(
        CTImageStorage, [ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, JPEG2000]
    )
    ae.add_requested_context(VERIFICATION, [ImplicitVRLittleEndian, ExplicitVRBigEndian])
    proposed = [*contexts, (CTImageStorage, "multi"), (VERIFICATION, "multi")]
    assoc = ae.associate("127.0.0.1", seed_scp, ae_title="STORESCP")
    try:
        assert assoc.is_established
        # pynetdicom numbers the proposed contexts 1, 3, 5, ... in order.
        accepted = {proposed[(cx.context_id - 1) // 2]: cx for cx in assoc.accepted_contexts}
        rejected = {proposed[(cx.context_id - 1) // 2]: cx.result for cx in assoc.rejected_contexts}
    finally:
        assoc.release()
    for key, cx in accepted.items():
        if key[1] != "multi":
            assert cx.transfer_syntax == [key[1]], key
    single = [key for key in accepted if key[1] != "multi"]
    assert sorted(ts for sop, ts in single if sop == CTImageStorage) == sorted(STORAGE_SYNTAXES)
    assert sorted(ts for sop, ts in single if sop == VERIFICATION) == sorted(VERIFICATION_SYNTAXES)
    # Result 0x04: transfer syntaxes not supported; 0x03: abstract syntax not supported
    # (PS3.8 Table 9-18).
    assert rejected == {
        (CTImageStorage, DeflatedExplicitVRLittleEndian): 4,
        (CTImageStorage, "1.2.840.10008.1.2.4.201"): 4,
        (VERIFICATION, JPEGBaseline8Bit): 4,
        ("1.2.3.4.5.6.7.8", ExplicitVRLittleEndian): 3,
    }
    # Offered several, the sample takes the first of its own list that was offered.
    assert accepted[(CTImageStorage, "multi")].transfer_syntax == [RLELossless]
    assert accepted[(VERIFICATION, "multi")].transfer_syntax == [ExplicitVRBigEndian]


# --- a UID that would escape the storage folder ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_seed_scp_refuses_escaping_uids(seed_scp: int, tmp_path: Path) -> None:
    evil = [
        {"StudyInstanceUID": "../../escaped"},
        {"StudyInstanceUID": "/tmp/escaped-absolute"},
        {"StudyInstanceUID": "1.2.3", "SOPInstanceUID": "../../../escaped-sop"},
        {"StudyInstanceUID": ".."},
        {"StudyInstanceUID": "1.2.03"},  # not a valid UID either (leading zero)
    ]
    statuses = []
    async with DicomClient("127.0.0.1", seed_scp, "FODICOMSCU", "STORESCP") as client:
        for values in evil:
            ds = make_ct(rows=8, columns=8)
            for keyword, value in values.items():
                setattr(ds, keyword, value)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            statuses.append(await client.c_store(ds))
        good = make_ct(rows=8, columns=8)
        assert await client.c_store(good) == Status.SUCCESS
    assert all(category(s) is StatusCategory.FAILURE for s in statuses), [hex(s) for s in statuses]
    # Only the good instance was written; nothing outside the folder, no temporary leftovers.
    assert _stored_files(tmp_path) == [
        tmp_path / "DICOM" / good.StudyInstanceUID / f"{good.SOPInstanceUID}.dcm"
    ]
    _assert_no_partial_files(tmp_path)
    for where in (tmp_path, tmp_path.parent, Path("/tmp")):
        assert not list(where.glob("escaped*")), where
    assert not Path("/tmp/escaped-absolute").exists()


# --- the storage SCU sample into DCMTK storescp ----------------------------------------------------


def _scu_inputs(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    files = []
    for i in range(3):
        ds = make_ct(rows=64, columns=64, sop_uid=generate_uid())
        path = folder / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    files.append(Path(JPEG_FILE))
    return files


def _check_scu_run(result: subprocess.CompletedProcess[str], files: list[Path], scp: Any) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = [line for line in result.stdout.splitlines() if ": 0x" in line]
    assert len(lines) == len(files), output
    for path in files:
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert f"{uid}: 0x0000 Success" in result.stdout, output
    received = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in scp.folder.iterdir()}
    assert received == {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files}
    # storescp records the calling AE title as the files' Source Application Entity Title.
    sources = {
        dcmread(p, stop_before_pixels=True).file_meta.get("SourceApplicationEntityTitle")
        for p in scp.folder.iterdir()
    }
    assert sources == {"FODICOMSCU"}


@pytest.mark.interop
def test_store_scu_arguments_into_storescp(dcmtk_storescp: Any, tmp_path: Path) -> None:
    scp = dcmtk_storescp(extra=["+xa"])  # accept JPEG too
    files = _scu_inputs(tmp_path)
    result = run(
        [
            sys.executable,
            str(EXAMPLES / "store_scu.py"),
            "127.0.0.1",
            str(scp.port),
            *map(str, files),
        ],
        timeout=120,
    )
    _check_scu_run(result, files, scp)


@pytest.mark.interop
def test_store_scu_prompts_into_storescp(dcmtk_storescp: Any, tmp_path: Path) -> None:
    scp = dcmtk_storescp(extra=["+xa"])  # accept JPEG too
    files = _scu_inputs(tmp_path)
    answers = f"127.0.0.1\n{scp.port}\n{' '.join(map(str, files))}\n"
    result = run([sys.executable, str(EXAMPLES / "store_scu.py")], timeout=120, input=answers)
    assert "host" in result.stdout and "port" in result.stdout
    _check_scu_run(result, files, scp)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_store_scu_reports_a_failure_status(seed_scp: int, tmp_path: Path) -> None:
    """Against the seed SCP: a file whose study UID is unsafe gets a failure status printed,
    and the exit code says so."""
    bad = make_ct(rows=8, columns=8)
    bad.StudyInstanceUID = "../x"
    bad_path = tmp_path / "bad.dcm"
    bad.save_as(bad_path, enforce_file_format=True)
    scu = [sys.executable, str(EXAMPLES / "store_scu.py"), "127.0.0.1", str(seed_scp)]
    result = run([*scu, CT_SMALL, str(bad_path)], timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    ct_uid = dcmread(CT_SMALL, stop_before_pixels=True).SOPInstanceUID
    assert f"{ct_uid}: 0x0000 Success" in result.stdout
    assert f"{bad.SOPInstanceUID}: 0x" in result.stdout
    assert "(Failure)" in result.stdout


def test_store_scu_says_when_it_cannot_connect(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run([sys.executable, str(EXAMPLES / "store_scu.py"), "127.0.0.1", str(port), CT_SMALL])
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
