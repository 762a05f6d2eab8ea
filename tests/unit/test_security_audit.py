"""security.audit: records carry the PS3.15 A.5 fields, never pixel data or a password; the
JSON lines and RFC 5424 syslog writers."""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from dicomnet.pdu import UserIdentityRQ
from dicomnet.security.audit import (
    Auditor,
    AuditRecord,
    JsonLinesWriter,
    Node,
    Outcome,
    Party,
    SyslogWriter,
    application_record,
    association_record,
    authentication_failure_record,
    format_syslog,
    node_authentication_failure_record,
    query_keys,
    query_record,
    refusal_record,
    retrieve_record,
    store_record,
)
from dicomnet.security.users import decide_identity, hash_password, load_users

T = datetime.datetime(2024, 1, 2, 10, 15, 0, 123000, tzinfo=datetime.UTC)
NODE = Node("DICOMNET", "pacs.example", "dicomnet-test")
PEER = Party("MODALITY1", "10.0.0.5", "alice", "CN=modality1,O=Hospital")


def as_json(record: AuditRecord) -> dict[str, Any]:
    line = record.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed: dict[str, Any] = json.loads(line)
    assert parsed == json.loads(json.dumps(record.to_json()))
    return parsed


def code(value: dict[str, str]) -> str:
    return value["csd-code"]


def test_store_record() -> None:
    record = store_record(
        NODE,
        PEER,
        T,
        study_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3.4",
        patient_id="PAT001",
        patient_name="DOE^JOHN",
        association=7,
    )
    out = as_json(record)
    event = out["EventIdentification"]
    assert code(event["EventID"]) == "110104"
    assert event["EventID"]["codeSystemName"] == "DCM"
    assert event["EventActionCode"] == "C"
    assert event["EventOutcomeIndicator"] == 0
    assert event["EventDateTime"] == "2024-01-02T10:15:00.123+00:00"
    source, destination = out["ActiveParticipant"]
    assert source["UserID"] == "MODALITY1" and source["UserIsRequestor"] is True
    assert code(source["RoleIDCode"]) == "110153"
    assert code(source["UserIDTypeCode"]) == "110119"  # Station AE Title
    assert source["UserName"] == "alice"
    assert source["NetworkAccessPointTypeCode"] == 2
    assert source["NetworkAccessPointID"] == "10.0.0.5"
    assert destination["UserID"] == "DICOMNET" and code(destination["RoleIDCode"]) == "110152"
    assert destination["NetworkAccessPointTypeCode"] == 1  # a host name
    study, patient = out["ParticipantObjectIdentification"]
    assert (study["ParticipantObjectTypeCode"], study["ParticipantObjectTypeCodeRole"]) == (2, 3)
    assert code(study["ParticipantObjectIDTypeCode"]) == "110180"
    assert study["ParticipantObjectID"] == "1.2.3"
    assert study["ParticipantObjectDetail"]["SOPInstanceUID"] == "1.2.3.4"
    assert (patient["ParticipantObjectTypeCode"], patient["ParticipantObjectTypeCodeRole"]) == (
        1,
        1,
    )
    assert patient["ParticipantObjectIDTypeCode"]["codeSystemName"] == "RFC-3881"
    assert patient["ParticipantObjectID"] == "PAT001"
    assert patient["ParticipantObjectName"] == "DOE^JOHN"
    assert out["AuditSourceIdentification"]["AuditSourceID"] == "dicomnet-test"
    assert out["dicomnet"] == {
        "event": "store",
        "association": 7,
        "peer_certificate": "CN=modality1,O=Hospital",
        "status": "0x0000",
    }


def test_failed_store_is_a_minor_failure() -> None:
    record = store_record(
        NODE, PEER, T, study_uid="1.2", sop_class_uid="1.2", sop_instance_uid="1.2", status=0xA700
    )
    out = as_json(record)
    assert out["EventIdentification"]["EventOutcomeIndicator"] == 4
    assert out["EventIdentification"]["EventOutcomeDescription"] == "status 0xA700"
    assert len(out["ParticipantObjectIdentification"]) == 1  # no patient ID, no patient object


def test_query_record_keeps_text_keys_only() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "DOE^*"
    identifier.ModalitiesInStudy = ["CT", "MR"]
    identifier.AdditionalPatientHistory = "x" * 1000  # LT
    identifier.PixelData = b"\x01\x02" * 64
    identifier.RedPaletteColorLookupTableData = b"\x00" * 16  # OW
    identifier.ReferencedStudySequence = Sequence([Dataset(), Dataset()])
    identifier.StudyInstanceUID = ""
    keys = query_keys(identifier)
    assert keys["PatientName"] == "DOE^*"
    assert keys["ModalitiesInStudy"] == "CT\\MR"
    assert len(keys["AdditionalPatientHistory"]) == 256
    assert keys["ReferencedStudySequence"] == "(sequence of 2 items)"
    assert keys["StudyInstanceUID"] == ""
    assert "PixelData" not in keys and "RedPaletteColorLookupTableData" not in keys

    record = query_record(
        NODE, PEER, T, sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1", identifier=identifier, matches=3
    )
    line = record.to_line()
    assert b"\\u0001\\u0002" not in line and b"PixelData" not in line
    out = json.loads(line)
    assert code(out["EventIdentification"]["EventID"]) == "110112"
    assert out["EventIdentification"]["EventActionCode"] == "E"
    (sop_class,) = out["ParticipantObjectIdentification"]
    assert code(sop_class["ParticipantObjectIDTypeCode"]) == "110181"
    assert sop_class["ParticipantObjectQuery"]["QueryRetrieveLevel"] == "STUDY"
    assert sop_class["ParticipantObjectDetail"] == {"matches": 3}


def test_retrieve_records() -> None:
    viewer = Party("VIEWER", "10.0.0.9")
    move = as_json(
        retrieve_record(
            NODE,
            PEER,
            T,
            operation="move",
            destination=viewer,
            study_uids=["1.2.3", "1.2.4"],
            completed=10,
            failed=1,
            status=0xB000,
        )
    )
    assert move["EventIdentification"]["EventActionCode"] == "R"
    assert move["EventIdentification"]["EventOutcomeIndicator"] == 4
    ours, dest, requestor = move["ActiveParticipant"]
    assert ours["UserID"] == "DICOMNET" and code(ours["RoleIDCode"]) == "110153"
    assert dest["UserID"] == "VIEWER" and code(dest["RoleIDCode"]) == "110152"
    assert requestor["UserID"] == "MODALITY1" and requestor["UserIsRequestor"] is True
    assert [o["ParticipantObjectID"] for o in move["ParticipantObjectIdentification"]] == [
        "1.2.3",
        "1.2.4",
    ]
    get = as_json(
        retrieve_record(NODE, PEER, T, operation="get", destination=PEER, study_uids=["1.2.3"])
    )
    assert len(get["ActiveParticipant"]) == 2
    assert get["ActiveParticipant"][1]["UserIsRequestor"] is True
    assert get["dicomnet"]["operation"] == "get"


def test_security_records() -> None:
    login = as_json(association_record(NODE, PEER, T, association=3))
    assert code(login["EventIdentification"]["EventID"]) == "110114"
    assert code(login["EventIdentification"]["EventTypeCode"][0]) == "110122"
    logout = as_json(association_record(NODE, PEER, T, released=True, detail={"stored": 5}))
    assert code(logout["EventIdentification"]["EventTypeCode"][0]) == "110123"
    assert logout["dicomnet"]["stored"] == 5

    refused = as_json(
        refusal_record(NODE, PEER, T, "'MODALITY1' may not use find", answer="status 0x0124")
    )
    assert code(refused["EventIdentification"]["EventID"]) == "110113"
    assert code(refused["EventIdentification"]["EventTypeCode"][0]) == "110132"
    assert refused["EventIdentification"]["EventOutcomeIndicator"] == 4
    assert refused["dicomnet"]["answer"] == "status 0x0124"

    tls = as_json(node_authentication_failure_record(NODE, "10.0.0.66", T, "certificate expired"))
    assert code(tls["EventIdentification"]["EventTypeCode"][0]) == "110126"
    assert tls["ActiveParticipant"][0]["NetworkAccessPointID"] == "10.0.0.66"

    start = as_json(application_record(NODE, T, started=True))
    assert code(start["EventIdentification"]["EventID"]) == "110100"
    assert code(start["EventIdentification"]["EventTypeCode"][0]) == "110120"


def test_authentication_failure_never_holds_the_password() -> None:
    users = load_users({"alice": hash_password("right", ln=10)})
    decision = decide_identity(UserIdentityRQ(2, True, b"alice", b"Wr0ngPassw0rd"), users)
    assert not decision.accepted
    peer = Party("MODALITY1", "10.0.0.5", decision.username)
    record = authentication_failure_record(NODE, peer, T, decision.reason)
    line = record.to_line()
    assert b"Wr0ngPassw0rd" not in line
    out = json.loads(line)
    assert out["EventIdentification"]["EventOutcomeIndicator"] == 4
    assert (
        out["EventIdentification"]["EventOutcomeDescription"] == "wrong passcode for user 'alice'"
    )


# -- writers --------------------------------------------------------------------------------------


def test_json_lines_writer_appends_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(path)
    writer.write(association_record(NODE, PEER, T))
    writer.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # records name patients
    again = JsonLinesWriter(path)  # a restart appends
    records = [
        store_record(NODE, PEER, T, study_uid=f"1.2.{i}", sop_class_uid="1.2", sop_instance_uid="1")
        for i in range(200)
    ]

    def write(chunk: list[AuditRecord]) -> None:
        for record in chunk:
            again.write(record)

    threads = [threading.Thread(target=write, args=(records[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    again.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 201
    objects = [json.loads(line) for line in lines]
    assert objects[0]["dicomnet"]["event"] == "association"
    studies = {o["ParticipantObjectIdentification"][0]["ParticipantObjectID"] for o in objects[1:]}
    assert studies == {f"1.2.{i}" for i in range(200)}
    with pytest.raises(ValueError, match="closed"):
        again.write(records[0])


# RFC 5424 §6: HEADER = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID,
# then SP STRUCTURED-DATA ("-" when none) and SP MSG, a UTF-8 MSG starting with the BOM.
_RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 "
    rb"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)) "
    rb"(?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<proc>[!-~]{1,128}) "
    rb"(?P<msgid>[!-~]{1,32}) - \xef\xbb\xbf(?P<msg>.*)$",
    re.DOTALL,
)


def test_syslog_format() -> None:
    ok = format_syslog(association_record(NODE, PEER, T), hostname="pacs.example", procid="4242")
    match = _RFC5424.match(ok)
    assert match is not None, ok
    assert match["pri"] == b"85"  # facility 10 (authpriv) * 8 + severity 5 (notice)
    assert match["time"] == b"2024-01-02T10:15:00.123+00:00"
    assert (match["host"], match["app"], match["proc"], match["msgid"]) == (
        b"pacs.example",
        b"dicomnet",
        b"4242",
        b"DICOM+AUDIT",
    )
    assert json.loads(match["msg"])["dicomnet"]["event"] == "association"
    failed = format_syslog(
        refusal_record(NODE, PEER, T, "no"), hostname="host with spaces", facility=4
    )
    match = _RFC5424.match(failed)
    assert match is not None
    assert match["pri"] == b"36"  # facility 4 (auth) * 8 + severity 4 (warning)
    assert match["host"] == b"hostwithspaces"


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, address: Any) -> None:
        self.sent.append((data, address))

    def close(self) -> None:
        pass


def test_syslog_writer_sends_one_datagram_per_record() -> None:
    writer = SyslogWriter(("127.0.0.1", 5514), hostname="pacs.example")
    writer._sock.close()
    fake = FakeSocket()
    writer._sock = fake  # type: ignore[assignment]
    record = association_record(NODE, PEER, T)
    writer.write(record)
    ((data, address),) = fake.sent
    assert address == ("127.0.0.1", 5514)
    match = _RFC5424.match(data)
    assert match is not None and match["host"] == b"pacs.example"


def test_auditor_survives_a_failing_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def write(self, record: AuditRecord) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    good = JsonLinesWriter(tmp_path / "audit.jsonl")
    auditor = Auditor([Broken(), good], NODE)
    auditor.association(PEER, association=1)
    auditor.store(PEER, study_uid="1.2", sop_class_uid="1.2", sop_instance_uid="1.2.3")
    auditor.refusal(PEER, "not allowed")
    auditor.close()
    assert auditor.failures == 3
    assert "disk full" in caplog.text
    kinds = [json.loads(line)["dicomnet"]["event"] for line in (tmp_path / "audit.jsonl").open()]
    assert kinds == ["association", "store", "refusal"]
    assert Outcome.MINOR_FAILURE == 4
