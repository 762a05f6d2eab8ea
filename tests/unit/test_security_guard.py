"""security.guard: the steps of an association as the server takes them, without a socket: the
per-address count (before a TLS handshake and on a plain port, given back exactly once), the
user identity and the permission to associate, the presentation contexts a peer may use, the
refusals of requests (0x0124, 0xA801), the C-STORE checks before and while its data set arrives
(0x0124, 0xA700, the size limit), and one audit record per event, never with a password."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from dicomnet.association import Incoming
from dicomnet.dimse.commands import CEchoRQ, CFindRQ, CGetRQ, CMoveRQ, CStoreRQ
from dicomnet.dimse.status import Status
from dicomnet.negotiation import (
    AssociationRequest,
    NegotiatedContext,
    PresentationContext,
)
from dicomnet.pdu import PresentationContextResult, UserIdentityRQ
from dicomnet.security.audit import Auditor, AuditRecord, Node
from dicomnet.security.decisions import (
    REJECT_AUTHENTICATION,
    REJECT_CALLING_AE,
    REJECT_LOCAL_LIMIT,
    RequestRefused,
)
from dicomnet.security.guard import RequestGuard, ServerSecurity
from dicomnet.security.limits import AssociationLimiter
from dicomnet.security.permissions import load_permissions
from dicomnet.security.tls import PeerCertificate, TLSHandshakeError
from dicomnet.security.users import hash_password, load_users
from dicomnet.service import AssociationInfo, ReceivedCStore, ReceivedQueryRetrieve
from dicomnet.sinks import FileSink, make_sink
from dicomnet.uids import VERIFICATION

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
# A cheap hash (ln=10): the tests are about the decisions, not scrypt's cost.
USERS = load_users({"alice": hash_password("correct horse", ln=10)})
PERMISSIONS = load_permissions(
    {
        "ae": {
            "MODALITY1": {"services": ["echo", "store"], "users": ["alice"]},
            "VIEWER": {"services": ["echo", "find", "move", "get"], "move_destinations": ["WS1"]},
            "SECURE": {"services": ["*"], "certificate_subject": "CN=secure,O=Hospital"},
        }
    }
)


class Records:
    """An audit writer that keeps the records."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass

    @property
    def kinds(self) -> list[str]:
        return [r.kind for r in self.records]

    def lines(self) -> str:
        return b"".join(r.to_line() for r in self.records).decode()


def security(records: Records | None = None, **kwargs: Any) -> ServerSecurity:
    auditor = Auditor([records], Node("DICOMNET", "node.example")) if records else None
    return ServerSecurity(auditor=auditor, **kwargs)


def info(ae: str = "MODALITY1", host: str = "10.0.0.5", port: int = 40000) -> AssociationInfo:
    return AssociationInfo(7, host, port, ae, "DICOMNET")


def request(
    ae: str = "MODALITY1", identity: UserIdentityRQ | None = None, *contexts: PresentationContext
) -> AssociationRequest:
    return AssociationRequest("DICOMNET", ae, list(contexts), user_identity=identity)


# -- 1. connections ---------------------------------------------------------------------------------


def test_per_address_limit_on_a_plain_port_is_given_back_once() -> None:
    records = Records()
    sec = security(records, limiter=AssociationLimiter(max_per_address=2))
    first, second = sec.connected("10.0.0.5", 1), sec.connected("10.0.0.5", 2)
    third = sec.connected("10.0.0.5", 3)
    assert first.allowed and second.allowed and not third.allowed
    assert third.reject == REJECT_LOCAL_LIMIT  # transient, local limit exceeded
    assert sec.connected("10.0.0.6", 1).allowed  # another address has its own count
    assert sec.limiter is not None and sec.limiter.count("10.0.0.5") == 2
    sec.ended(info(port=3), third, accepted=False)  # a refused one was never counted
    assert sec.limiter.count("10.0.0.5") == 2
    sec.ended(info(port=1), first, accepted=True)
    assert sec.limiter.count("10.0.0.5") == 1
    assert records.kinds == ["release"]  # the accepted one's Logout


def test_tls_connections_are_counted_before_the_handshake() -> None:
    records = Records()
    sec = security(records, limiter=AssociationLimiter(max_per_address=2))
    limiter = sec.limiter
    assert limiter is not None
    assert sec.tls_connect("10.0.0.9", 1) and sec.tls_connect("10.0.0.9", 2)
    assert not sec.tls_connect("10.0.0.9", 3)  # closed before any TLS byte
    (refusal,) = records.records
    assert refusal.kind == "refusal" and "before the TLS handshake" in str(refusal.extra)
    assert refusal.to_json()["ActiveParticipant"][0]["UserID"] == "10.0.0.9"
    # A handshake fails: its count is given back; the other reaches the association layer
    # and is not counted twice.
    sec.tls_failure(TLSHandshakeError("the peer did not speak TLS", ("10.0.0.9", 1)))
    sec.tls_dropped("10.0.0.9", 1)
    assert limiter.count("10.0.0.9") == 1
    admitted = sec.connected("10.0.0.9", 2)
    assert admitted.allowed and limiter.count("10.0.0.9") == 1
    sec.tls_dropped("10.0.0.9", 2)  # not the acceptor's any more: nothing to give back
    assert limiter.count("10.0.0.9") == 1
    sec.ended(info(host="10.0.0.9", port=2), admitted, accepted=False)
    assert limiter.count("10.0.0.9") == 0
    assert records.kinds == ["refusal", "node-authentication-failure"]


# -- 3. identity and permission to associate ----------------------------------------------------------


def test_a_valid_password_sets_the_user_and_the_positive_response() -> None:
    records = Records()
    sec = security(records, users=USERS, require_user=True)
    who = info()
    identity = UserIdentityRQ.password("alice", "correct horse", positive_response=True)
    rq = request("MODALITY1", identity)
    assert asyncio.run(sec.authorize(who, rq)) is None
    assert who.username == "alice"
    assert rq.user_identity_response == b""  # D.3.3.7.2: empty for username and passcode
    assert records.records == []


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (UserIdentityRQ.password("alice", "battery staple"), "wrong passcode for user 'alice'"),
        (UserIdentityRQ.password("mallory", "x"), "unknown user 'mallory'"),
        (None, "no user identity was sent and one is required"),
    ],
)
def test_a_failed_identity_is_rejected_and_audited_without_the_password(
    identity: UserIdentityRQ | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    records = Records()
    sec = security(records, users=USERS, require_user=True)
    who = info()
    assert asyncio.run(sec.authorize(who, request("MODALITY1", identity))) == REJECT_AUTHENTICATION
    assert who.username is None
    (record,) = records.records
    assert record.kind == "authentication-failure" and record.outcome_description == reason
    assert "battery staple" not in records.lines() and "battery staple" not in caplog.text
    assert reason in caplog.text


def test_the_permission_to_associate() -> None:
    records = Records()
    sec = security(records, users=USERS, permissions=PERMISSIONS)
    # Unknown calling AE title: rejected, "calling AE title not recognized".
    assert asyncio.run(sec.authorize(info("STRANGER"), request("STRANGER"))) == REJECT_CALLING_AE
    # MODALITY1's rule names its users: without a verified one, the ACSE rejects.
    assert asyncio.run(sec.authorize(info(), request())) == REJECT_AUTHENTICATION
    good = UserIdentityRQ.password("alice", "correct horse")
    assert asyncio.run(sec.authorize(info(), request("MODALITY1", good))) is None
    # SECURE must present its certificate.
    assert asyncio.run(sec.authorize(info("SECURE"), request("SECURE"))) == REJECT_CALLING_AE
    secure = info("SECURE")
    secure.peer_certificate = PeerCertificate(
        "CN=secure,O=Hospital", "CN=CA", "secure", "01", "", ""
    )
    assert asyncio.run(sec.authorize(secure, request("SECURE"))) is None
    assert records.kinds == ["refusal", "refusal", "refusal"]
    assert "'STRANGER' is not a known peer" in records.records[0].outcome_description  # type: ignore[operator]


def test_identities_are_ignored_when_the_node_has_no_users() -> None:
    sec = security(Records(), permissions=PERMISSIONS)
    who = info("VIEWER")
    rq = request("VIEWER", UserIdentityRQ.password("anyone", "anything"))
    assert asyncio.run(sec.authorize(who, rq)) is None
    assert who.username is None and rq.user_identity_response is None


# -- 4. presentation contexts ---------------------------------------------------------------------


def test_contexts_of_services_the_peer_may_not_use_are_user_rejected() -> None:
    records = Records()
    sec = security(records, permissions=PERMISSIONS)
    echo = PresentationContext(1, VERIFICATION, [ExplicitVRLittleEndian])
    find = PresentationContext(3, STUDY_ROOT_FIND, [ExplicitVRLittleEndian])
    ct_for_get = PresentationContext(5, CTImageStorage, [ExplicitVRLittleEndian])
    ct_for_get.proposed_scu_role, ct_for_get.proposed_scp_role = False, True
    mr = PresentationContext(7, MRImageStorage, [ExplicitVRLittleEndian])
    rq = request("VIEWER", None, echo, find, ct_for_get, mr)
    for pc in rq.presentation_contexts:
        pc.accept()
    sec.restrict_contexts(info("VIEWER"), rq)
    assert echo.accepted and find.accepted
    # A storage context for C-GET stays, the peer as SCP only (it receives, never stores).
    assert ct_for_get.accepted and (ct_for_get.scu_role, ct_for_get.scp_role) == (False, True)
    assert mr.result == PresentationContextResult.USER_REJECTION
    (record,) = records.records
    assert record.kind == "refusal" and "'VIEWER' may not use store" in str(
        record.outcome_description
    )

    # MODALITY1 may store but not find.
    find2 = PresentationContext(1, STUDY_ROOT_FIND, [ExplicitVRLittleEndian])
    ct = PresentationContext(3, CTImageStorage, [ExplicitVRLittleEndian])
    rq = request("MODALITY1", None, find2, ct)
    for pc in rq.presentation_contexts:
        pc.accept()
    sec.restrict_contexts(info("MODALITY1"), rq)
    assert find2.result == PresentationContextResult.USER_REJECTION and ct.accepted


# -- 5. requests ------------------------------------------------------------------------------------


def guard_for(ae: str, records: Records, **kwargs: Any) -> RequestGuard:
    guard = security(records, permissions=PERMISSIONS, **kwargs).guard(info(ae))
    assert guard is not None
    return guard


def test_requests_the_peer_may_not_make_are_refused() -> None:
    records = Records()
    viewer = guard_for("VIEWER", records)
    assert viewer.refuse(CEchoRQ(message_id=1)) is None
    assert viewer.refuse(CFindRQ(message_id=2, affected_sop_class_uid=STUDY_ROOT_FIND)) is None
    move = CMoveRQ(message_id=3, affected_sop_class_uid=STUDY_ROOT_MOVE, move_destination="WS1")
    assert viewer.refuse(move) is None
    elsewhere = CMoveRQ(
        message_id=4, affected_sop_class_uid=STUDY_ROOT_MOVE, move_destination="ELSEWHERE"
    )
    status, reason = viewer.refuse(elsewhere) or (0, "")
    assert status == Status.MOVE_DESTINATION_UNKNOWN == 0xA801
    assert "'VIEWER' may not move to 'ELSEWHERE'" in reason
    modality = guard_for("MODALITY1", records)
    refused = modality.refuse(CGetRQ(message_id=5, affected_sop_class_uid=STUDY_ROOT_GET))
    assert refused is not None and refused[0] == Status.NOT_AUTHORIZED == 0x0124
    # A C-STORE is checked when its command arrives (sink_factory), not here.
    store = CStoreRQ(message_id=6, affected_sop_class_uid=CTImageStorage)
    assert modality.refuse(store) is None
    assert [r.extra["answer"] for r in records.records] == ["status 0xA801", "status 0x0124"]


def test_nothing_to_guard_costs_nothing() -> None:
    assert ServerSecurity(users=USERS, require_user=True).guard(info()) is None
    assert ServerSecurity(max_instance_size=10).guard(info()) is not None


CONTEXT = NegotiatedContext(1, CTImageStorage, ExplicitVRLittleEndian)


def store_rq(uid: str = "1.2.3.4") -> CStoreRQ:
    return CStoreRQ(
        message_id=1, affected_sop_class_uid=CTImageStorage, affected_sop_instance_uid=uid
    )


def test_a_c_store_is_refused_before_its_data_set_arrives(tmp_path: Path) -> None:
    make = make_sink_in(tmp_path)
    # VIEWER may not store: 0x0124, no file.
    factory = guard_for("VIEWER", Records()).sink_factory(make)
    with pytest.raises(RequestRefused) as refused:
        factory(store_rq(), CONTEXT)
    assert refused.value.status == Status.NOT_AUTHORIZED
    # Less free disk than the minimum: 0xA700, no file.
    full = guard_for("MODALITY1", Records(), storage=tmp_path, min_free_disk=1 << 60)
    with pytest.raises(RequestRefused) as refused:
        full.sink_factory(make)(store_rq(), CONTEXT)
    assert refused.value.status == Status.OUT_OF_RESOURCES == 0xA700
    assert "below the minimum" in refused.value.reason
    assert files(tmp_path) == []
    # An identifier is not a C-STORE: its sink is made as before.
    query = CFindRQ(message_id=2, affected_sop_class_uid=STUDY_ROOT_FIND)
    assert not isinstance(factory(query, CONTEXT), FileSink)


def make_sink_in(folder: Path) -> Any:
    def make(message: Any, context: Any) -> Any:
        return make_sink(message, context, temp_dir=folder / "incoming")

    return make


def files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_the_size_limit_applies_while_the_data_set_streams(tmp_path: Path) -> None:
    guard = guard_for("MODALITY1", Records(), max_instance_size=1000)
    sink = guard.sink_factory(make_sink_in(tmp_path))(store_rq(), CONTEXT)
    assert isinstance(sink, FileSink) and sink.max_size == 1000
    sink.write(b"\x00" * 600)
    with pytest.raises(RequestRefused) as refused:
        sink.write(b"\x00" * 401)
    assert refused.value.status == 0xA700 and "larger than the limit of 1000 bytes" in str(
        refused.value
    )
    path = sink.path
    sink.abort()  # what the association does with a refused data set
    assert not path.exists()


def received_ct(tmp_path: Path) -> tuple[Incoming, ReceivedCStore]:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1"
    ds.PatientID = "PAT-7"
    ds.PatientName = "DOE^JANE"
    ds.PixelData = b"\x01\x02" * 8
    ds["PixelData"].VR = "OW"
    raw = _encode(ds)
    sink = make_sink_in(tmp_path)(store_rq(), CONTEXT)
    sink.write(raw)
    sink.finish()
    item = Incoming(store_rq(), CONTEXT, sink)
    request = ReceivedCStore(
        info(), CONTEXT, item.message, path=sink.path, size=sink.size, prefix=sink.prefix
    )
    return item, request


def _encode(ds: Dataset) -> bytes:
    from dicomnet.dataset import encode_dataset

    return encode_dataset(ds, ExplicitVRLittleEndian)


def test_stores_are_audited_with_study_and_patient_never_pixels(tmp_path: Path) -> None:
    records = Records()
    guard = guard_for("MODALITY1", records)
    item, received = received_ct(tmp_path)

    async def handler(request: ReceivedCStore) -> int:
        request.path.unlink()  # as a handler that moved the file away
        return Status.SUCCESS

    wrapped = guard.store_handler(item, handler)
    assert wrapped is not None
    assert asyncio.run(wrapped(received)) == Status.SUCCESS
    (record,) = records.records
    data = record.to_json()
    assert record.kind == "store" and data["EventIdentification"]["EventActionCode"] == "C"
    objects = {o["ParticipantObjectID"]: o for o in data["ParticipantObjectIdentification"]}
    assert set(objects) == {"1.2.826.0.1.3680043.2.1", "PAT-7"}
    assert objects["PAT-7"]["ParticipantObjectName"] == "DOE^JANE"
    assert "AQI" not in records.lines()  # base64 of the pixel bytes: never there

    # A refused C-STORE is audited as the refusal, and the handler is not wrapped.
    refused = Incoming(store_rq(), CONTEXT, None, RequestRefused("too large", 0xA700))
    assert guard.store_handler(refused, handler) is handler
    assert records.records[-1].kind == "refusal"
    assert records.records[-1].extra["answer"] == "status 0xA700"


def test_queries_and_retrieves_are_audited_when_answered() -> None:
    records = Records()
    guard = guard_for("VIEWER", records)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = "1.2.3"
    identifier.PatientID = "PAT-7"
    raw = _encode(identifier)
    find_ctx = NegotiatedContext(1, STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    find = ReceivedQueryRetrieve(
        info("VIEWER"),
        find_ctx,
        CFindRQ(message_id=1, affected_sop_class_uid=STUDY_ROOT_FIND),
        raw=raw,
    )
    guard.answered(find, 0, {}, 3)
    move_ctx = NegotiatedContext(3, STUDY_ROOT_MOVE, ExplicitVRLittleEndian)
    move = ReceivedQueryRetrieve(
        info("VIEWER"),
        move_ctx,
        CMoveRQ(message_id=2, affected_sop_class_uid=STUDY_ROOT_MOVE, move_destination="WS1"),
        raw=raw,
    )
    guard.answered(
        move,
        0xB000,
        {"number_of_completed_suboperations": 4, "number_of_failed_suboperations": 1},
        5,
    )
    query, retrieve = (r.to_json() for r in records.records)
    assert query["EventIdentification"]["EventID"]["csd-code"] == "110112"  # Query
    assert query["ParticipantObjectIdentification"][0]["ParticipantObjectDetail"] == {"matches": 3}
    assert (
        query["ParticipantObjectIdentification"][0]["ParticipantObjectQuery"]["PatientID"]
        == "PAT-7"
    )
    assert retrieve["EventIdentification"]["EventID"]["csd-code"] == "110104"
    assert retrieve["EventIdentification"]["EventActionCode"] == "R"
    users = [p["UserID"] for p in retrieve["ActiveParticipant"]]
    assert users == ["DICOMNET", "WS1", "VIEWER"]
    study = retrieve["ParticipantObjectIdentification"][0]
    assert study["ParticipantObjectID"] == "1.2.3"
    assert study["ParticipantObjectDetail"] == {"completed": 4, "failed": 1, "warning": 0}
    json.dumps(query), json.dumps(retrieve)


def test_min_free_disk_needs_the_storage_folder() -> None:
    with pytest.raises(ValueError, match="storage folder"):
        ServerSecurity(min_free_disk=1)
