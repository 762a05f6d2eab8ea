"""The workflow services against other implementations, as users run them: DCMTK's ``findscu -W``
against ``dicomnet serve`` (every matching key type, sequence matching) with items added by
``dicomnet worklist add`` while it runs; ``dicomnet find --worklist`` against DCMTK's
``wlmscpfs`` serving a folder of ``.wl`` files made with ``dump2dcm``; pynetdicom as MPPS and
storage commitment SCU against ``dicomnet serve`` (the report on the same association, and on a
new association to a pynetdicom SCP with the roles checked), and as MPPS and commitment SCP
against ``dicomnet mpps`` and ``dicomnet commit --listen``."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.archive.commitment import (
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    CommitmentReport,
    parse_report,
    report_dataset,
    request_dataset,
)
from dicomnet.archive.mpps import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from tests.cli.conftest import Serve, dicomnet
from tests.cli.test_serve_command import wait_for_log
from tests.helpers import free_port, require_pynetdicom, require_tool, run, wait_for_port, write_ct

pytestmark = pytest.mark.interop

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _ds(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _worklist_item(
    pid: str, name: str, accession: str, study: str, modality: str, station: str, date: str,
    time: str, code: str,
) -> Dataset:  # fmt: skip
    ds = _ds(
        PatientID=pid,
        PatientName=name,
        PatientBirthDate="19700101",
        PatientSex="O",
        AccessionNumber=accession,
        RequestedProcedureID="RP" + accession,
        RequestedProcedureDescription="procedure " + accession,
        StudyInstanceUID=study,
    )
    protocol = _ds(CodeValue=code, CodingSchemeDesignator="LOCAL", CodeMeaning="protocol " + code)
    ds.ScheduledProcedureStepSequence = DicomSequence(
        [
            _ds(
                Modality=modality,
                ScheduledStationAETitle=station,
                ScheduledProcedureStepStartDate=date,
                ScheduledProcedureStepStartTime=time,
                ScheduledProcedureStepID="SPS" + accession,
                ScheduledProcedureStepDescription="step " + accession,
                ScheduledProtocolCodeSequence=DicomSequence([protocol]),
            )
        ]
    )
    return ds


STUDY = "1.2.826.0.1.3680043.8.498.1000"
ITEMS = [
    _worklist_item("P1", "Doe^John", "A1", STUDY + "1", "CT", "CT1", "20261201", "083000", "H1"),
    _worklist_item("P2", "Doe^Jane", "A2", STUDY + "2", "MR", "MR1", "20261201", "140000", "K1"),
    _worklist_item("P3", "Smith^Ann", "A3", STUDY + "3", "CT", "CT2", "20261202", "091500", "H2"),
    _worklist_item("P4", "Jones^Bob", "A4", STUDY + "4", "US", "US1", "20261203", "101000", "A1"),
]


# -- findscu -W against dicomnet serve ----------------------------------------------------------------


def test_findscu_worklist_against_serve_every_key_type(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    findscu = require_tool("findscu")
    server = serve("--aet", "ARCHIVE")
    items = tmp_path / "items.json"
    items.write_text(json.dumps([ds.to_json_dict() for ds in ITEMS]))
    added = dicomnet("worklist", "add", "--storage", str(server.storage), str(items))
    assert added.returncode == 0, added.stderr
    assert added.stdout.split() == [
        "A1|RPA1|SPSA1",
        "A2|RPA2|SPSA2",
        "A3|RPA3|SPSA3",
        "A4|RPA4|SPSA4",
    ]

    def findscu_w(*keys: str) -> list[Dataset]:
        out = tmp_path / f"rsp{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        args = [findscu, "-W", "-X", "-od", str(out), "-aec", "ARCHIVE"]
        for key in ("PatientID", *keys):
            args += ["-k", key]
        result = run([*args, "127.0.0.1", str(server.port)])
        assert result.returncode == 0, result.stdout + result.stderr
        return [dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]

    def ids(answers: list[Dataset]) -> list[str]:
        return sorted(str(a.PatientID) for a in answers)

    sps = "(0040,0100)[0]"
    # Single Value Matching, top level and inside the step.
    assert ids(findscu_w("PatientID=P2")) == ["P2"]
    assert ids(findscu_w(f"{sps}.Modality=CT")) == ["P1", "P3"]
    # Wild Card Matching (* and ?), and PN.
    assert ids(findscu_w("PatientName=Doe^J*")) == ["P1", "P2"]
    assert ids(findscu_w(f"{sps}.ScheduledStationAETitle=?T?")) == ["P1", "P3"]
    # List of UID Matching.
    assert ids(findscu_w(f"StudyInstanceUID={STUDY}1\\{STUDY}4")) == ["P1", "P4"]
    # Range Matching on dates and times, open ends too.
    assert ids(findscu_w(f"{sps}.ScheduledProcedureStepStartDate=20261201-20261202")) == [
        "P1",
        "P2",
        "P3",
    ]
    assert ids(findscu_w(f"{sps}.ScheduledProcedureStepStartDate=20261202-")) == ["P3", "P4"]
    assert ids(
        findscu_w(
            f"{sps}.ScheduledProcedureStepStartDate=20261201",
            f"{sps}.ScheduledProcedureStepStartTime=-1200",
        )
    ) == ["P1"]
    # Universal Matching: return keys come back with the stored values.
    [one] = findscu_w("PatientID=P4", "PatientName", "AccessionNumber", f"{sps}.Modality")
    assert (str(one.PatientName), one.AccessionNumber) == ("Jones^Bob", "A4")
    assert one.ScheduledProcedureStepSequence[0].Modality == "US"
    assert "RequestedProcedureID" not in one
    # Sequence Matching: a key inside a sequence inside the step.
    code = f"{sps}.(0040,0008)[0]"
    answers = findscu_w(f"{code}.CodeValue=H2", f"{code}.CodeMeaning")
    assert ids(answers) == ["P3"]
    [protocol] = answers[0].ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    assert (protocol.CodeValue, protocol.CodeMeaning) == ("H2", "protocol H2")
    assert findscu_w("PatientID=NOBODY") == []
    assert "worklist C-FIND: 0 items" in server.log


# -- dicomnet find --worklist against wlmscpfs ----------------------------------------------------


def _dump(ds: Dataset, indent: str = "") -> list[str]:
    """``ds`` as dump2dcm's text (the format DCMTK's dcmdump prints)."""
    lines = []
    for elem in ds:
        tag = f"({elem.tag.group:04x},{elem.tag.element:04x})"
        if elem.VR == "SQ":
            lines.append(f"{indent}{tag} SQ (Sequence with undefined length)")
            for item in elem.value:
                lines.append(f"{indent}  (fffe,e000) na (Item with undefined length)")
                lines += _dump(item, indent + "    ")
                lines.append(f"{indent}  (fffe,e00d) na (ItemDelimitationItem)")
            lines.append(f"{indent}(fffe,e0dd) na (SequenceDelimitationItem)")
        else:
            lines.append(f"{indent}{tag} {elem.VR} [{elem.value}]")
    return lines


@contextmanager
def wlmscpfs(folder: Path, aet: str) -> Iterator[int]:
    exe = require_tool("wlmscpfs")
    dump2dcm = require_tool("dump2dcm")
    (folder / aet).mkdir(parents=True)
    (folder / aet / "lockfile").touch()  # wlmscpfs locks the folder with it
    for n, ds in enumerate(ITEMS):
        text = folder / f"item{n}.dump"
        text.write_text("\n".join(_dump(ds)) + "\n")
        made = run([dump2dcm, str(text), str(folder / aet / f"item{n}.wl")])
        assert made.returncode == 0, made.stderr
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-s", "-dfp", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)  # type: ignore[arg-type]
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dicomnet_find_worklist_against_wlmscpfs(tmp_path: Path) -> None:
    with wlmscpfs(tmp_path / "worklists", "WLAE") as port:

        def find(*keys: str) -> list[dict[str, Any]]:
            args = ["find", "127.0.0.1", str(port), "--aec", "WLAE", "--worklist", "--json"]
            for key in keys:
                args += ["-k", key]
            result = dicomnet(*args)
            assert result.returncode == 0, result.stderr
            answers: list[dict[str, Any]] = json.loads(result.stdout)
            return answers

        def ids(answers: list[dict[str, Any]]) -> list[str]:
            return sorted(a["00100020"]["Value"][0] for a in answers)

        ct = find("Modality=CT")
        assert ids(ct) == ["P1", "P3"]
        step = Dataset.from_json(ct[0]).ScheduledProcedureStepSequence[0]
        assert step.Modality == "CT" and step.ScheduledStationAETitle in ("CT1", "CT2")
        assert ids(find("ScheduledProcedureStepStartDate=20261201-20261202")) == ["P1", "P2", "P3"]
        assert ids(find("ScheduledStationAETitle=MR1", "PatientName=Doe*")) == ["P2"]
        assert find("PatientID=NOBODY") == []
        # The table: the step's attributes are columns.
        table = dicomnet(
            "find", "127.0.0.1", str(port), "--aec", "WLAE", "-W", "-k", "PatientID=P4"
        )
        assert table.returncode == 0 and "US1" in table.stdout and "Jones^Bob" in table.stdout


# -- pynetdicom SCUs against dicomnet serve ------------------------------------------------------


def _mpps_start() -> Dataset:
    ds = _ds(PerformedProcedureStepStatus="IN PROGRESS", PatientID="P1", Modality="CT")
    ds.ScheduledStepAttributesSequence = DicomSequence(
        [_ds(AccessionNumber="A1", RequestedProcedureID="RPA1", ScheduledProcedureStepID="SPSA1")]
    )
    return ds


def test_pynetdicom_mpps_scu_against_serve(serve: Callable[..., Serve]) -> None:
    require_pynetdicom()
    from pynetdicom import AE

    server = serve("--aet", "ARCHIVE")
    ae = AE(ae_title="PYMOD")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(MPPS, SYNTAXES)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="ARCHIVE")
    assert assoc.is_established
    try:
        uid = "1.2.826.0.1.3680043.8.498.555"
        status, _ = assoc.send_n_create(_mpps_start(), MPPS, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(_ds(PerformedProcedureStepStatus="COMPLETED"), MPPS, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(_ds(PerformedProcedureStepStatus="COMPLETED"), MPPS, uid)
        assert status.Status == 0x0110
        assert status.ErrorComment == "Performed Procedure Step Object may no longer be updated"
        assert status.ErrorID == 0xA710
        status, _ = assoc.send_n_set(_ds(PerformedProcedureStepStatus="COMPLETED"), MPPS, "1.2.3")
        assert status.Status == 0x0112
        status, _ = assoc.send_n_create(_ds(PerformedProcedureStepStatus="DONE"), MPPS, "1.2.4")
        assert status.Status == 0x0106
    finally:
        assoc.release()
    listed = dicomnet("mpps", "list", "--storage", str(server.storage), "--csv")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].startswith(f"{uid},COMPLETED,A1|RPA1|SPSA1,PYMOD,")
    assert "MPPS N-SET 1.2.3 refused: 0x0112" in server.log


def _stored_refs(server: Serve, tmp_path: Path, count: int) -> list[tuple[str, str]]:
    folder = tmp_path / "images"
    refs = []
    for n in range(count):
        ds = write_ct(folder / f"{n}.dcm", rows=8, columns=8)
        refs.append((CTImageStorage, str(ds.SOPInstanceUID)))
    sent = dicomnet("store", "127.0.0.1", str(server.port), "--aec", "ARCHIVE", str(folder))
    assert sent.returncode == 0, sent.stderr
    return refs


def test_pynetdicom_commitment_scu_report_on_the_same_association(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt

    server = serve("--aet", "ARCHIVE")
    refs = _stored_refs(server, tmp_path, 3)
    missing = (CTImageStorage, "1.2.826.0.1.3680043.8.498.404")
    reports: list[CommitmentReport] = []
    got = threading.Event()

    def on_report(event: Any) -> Any:
        reports.append(parse_report(event.event_information))
        got.set()
        return 0x0000, None

    ae = AE(ae_title="PYMOD")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH, SYNTAXES)
    assoc = ae.associate(
        "127.0.0.1",
        server.port,
        ae_title="ARCHIVE",
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    assert assoc.is_established
    try:
        info = request_dataset("2.25.1234567", [*refs, missing])
        status, _ = assoc.send_n_action(
            info, 1, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE
        )
        assert status.Status == 0x0000
        assert got.wait(20), server.log
    finally:
        assoc.release()
    [report] = reports
    assert report.transaction_uid == "2.25.1234567"
    assert report.success == refs and report.failure == [(*missing, 0x0112)]
    wait_for_log(server, "sent to PYMOD on its association: 3 committed, 1 failed")


def test_pynetdicom_commitment_scu_report_on_a_new_association(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt

    port = free_port()
    server = serve("--aet", "ARCHIVE", "--peer", f"PYMOD=127.0.0.1:{port}")
    refs = _stored_refs(server, tmp_path, 2)
    reports: list[CommitmentReport] = []
    roles: list[tuple[bool, bool]] = []
    got = threading.Event()

    def on_report(event: Any) -> Any:
        [cx] = event.assoc.accepted_contexts
        roles.append((bool(cx.as_scu), bool(cx.as_scp)))
        reports.append(parse_report(event.event_information))
        got.set()
        return 0x0000, None

    receiver = AE(ae_title="PYMOD")
    receiver.acse_timeout = receiver.dimse_timeout = receiver.network_timeout = 30
    # The archive proposes the SCP role for itself (PS3.4 J.3.3.1.3): accept just that.
    receiver.add_supported_context(STORAGE_COMMITMENT_PUSH, SYNTAXES, scu_role=False, scp_role=True)
    scp = receiver.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        ae = AE(ae_title="PYMOD")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH, SYNTAXES)
        assoc = ae.associate("127.0.0.1", server.port, ae_title="ARCHIVE")
        assert assoc.is_established
        status, _ = assoc.send_n_action(
            request_dataset("2.25.7654321", refs),
            1,
            STORAGE_COMMITMENT_PUSH,
            STORAGE_COMMITMENT_PUSH_INSTANCE,
        )
        assoc.release()  # at once: the report has to come on a new association
        assert status.Status == 0x0000
        assert got.wait(20), server.log
    finally:
        scp.shutdown()
    [report] = reports
    assert report.success == refs and report.failure == []
    # pynetdicom's view as the acceptor: it is the SCU of the report, the archive its SCP.
    assert roles == [(True, False)]
    wait_for_log(server, f"sent to PYMOD on a new association to 127.0.0.1:{port}")


# -- pynetdicom SCPs against dicomnet's client commands -------------------------------------------


def test_dicomnet_mpps_against_a_pynetdicom_mpps_scp(tmp_path: Path) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt

    received: list[tuple[str, str, Dataset]] = []

    def on_create(event: Any) -> Any:
        uid = event.request.AffectedSOPInstanceUID or "1.2.826.0.1.3680043.8.498.77"
        received.append(("create", uid, event.attribute_list))
        return 0x0000, None

    def on_set(event: Any) -> Any:
        uid = event.request.RequestedSOPInstanceUID
        received.append(("set", uid, event.modification_list))
        status = 0x0000 if len(received) == 2 else 0x0110
        return status, None

    ae = AE(ae_title="PYMPPS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_supported_context(MPPS, SYNTAXES)
    port = free_port()
    scp = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set)],
    )
    try:
        start = tmp_path / "start.json"
        start.write_text(json.dumps(_mpps_start().to_json_dict()))
        done = tmp_path / "done.json"
        done.write_text(json.dumps(_ds(PerformedProcedureStepStatus="COMPLETED").to_json_dict()))
        uid = "1.2.826.0.1.3680043.8.498.88"
        created = dicomnet("mpps", "create", "127.0.0.1", str(port), str(start), "--uid", uid)
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip() == uid
        updated = dicomnet("mpps", "set", "127.0.0.1", str(port), str(done), "--uid", uid)
        assert updated.returncode == 0, updated.stderr
        refused = dicomnet("mpps", "set", "127.0.0.1", str(port), str(done), "--uid", uid)
        assert refused.returncode == 1 and "0x0110" in refused.stderr
    finally:
        scp.shutdown()
    assert [(kind, u) for kind, u, _ in received] == [("create", uid), ("set", uid), ("set", uid)]
    assert received[0][2].PerformedProcedureStepStatus == "IN PROGRESS"
    assert received[0][2].ScheduledStepAttributesSequence[0].AccessionNumber == "A1"
    assert received[1][2].PerformedProcedureStepStatus == "COMPLETED"


def test_dicomnet_commit_listens_for_a_pynetdicom_report_on_a_new_association(
    tmp_path: Path,
) -> None:
    require_pynetdicom()
    from pynetdicom import AE, build_role, evt

    listen = free_port()
    threads: list[threading.Thread] = []
    statuses: list[int] = []

    def send_report(info: Dataset) -> None:
        refs = [
            (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in info.ReferencedSOPSequence
        ]
        report = CommitmentReport(str(info.TransactionUID), refs[1:], [(*refs[0], 0x0119)])
        ae = AE(ae_title="PYSCP")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH, SYNTAXES)
        role = build_role(STORAGE_COMMITMENT_PUSH, scp_role=True)
        assoc = ae.associate("127.0.0.1", listen, ae_title="MODALITY", ext_neg=[role])
        assert assoc.is_established
        status, _ = assoc.send_n_event_report(
            report_dataset(report),
            report.event_type_id,
            STORAGE_COMMITMENT_PUSH,
            STORAGE_COMMITMENT_PUSH_INSTANCE,
        )
        statuses.append(int(status.Status))
        assoc.release()

    def on_action(event: Any) -> Any:
        info = event.action_information
        thread = threading.Thread(target=send_report, args=(info,), daemon=True)
        threads.append(thread)
        thread.start()
        return 0x0000, None

    scp_ae = AE(ae_title="PYSCP")
    scp_ae.acse_timeout = scp_ae.dimse_timeout = scp_ae.network_timeout = 30
    scp_ae.add_supported_context(STORAGE_COMMITMENT_PUSH, SYNTAXES)
    port = free_port()
    scp = scp_ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_ACTION, on_action)]
    )
    try:
        images = tmp_path / "images"
        for n in range(3):
            write_ct(images / f"{n}.dcm", rows=8, columns=8)
        result = dicomnet(
            "commit", "127.0.0.1", str(port), str(images), "--aet", "MODALITY",
            "--listen", str(listen), "--timeout", "20",
        )  # fmt: skip
        for thread in threads:
            thread.join(20)
    finally:
        scp.shutdown()
    assert result.returncode == 1, result.stderr  # one instance failed
    lines = result.stdout.splitlines()
    assert sum(line.startswith("committed  ") for line in lines) == 2
    [failed] = [line for line in lines if line.startswith("FAILED")]
    assert failed.endswith("0x0119 class/instance conflict")
    assert statuses == [0x0000]
