"""The audit trail: one structured record per association, store, query, retrieve, refusal and
authentication failure, written as JSON lines and/or RFC 5424 syslog messages.

Rules: a record carries the fields of a DICOM audit message (PS3.15 A.5, the RFC 3881 model):
the event (EventID, EventActionCode, EventDateTime, EventOutcomeIndicator, EventTypeCode), the
active participants (AE titles with their role and network address, the user), the audit source
and the participant objects (the study, the patient, the SOP class of a query), with the codes of
PS3.16 (DCM 1101xx). It is JSON, not the XML of the audit message schema, with the schema's names;
dicomnet's own fields (the association id, the reason) sit under ``"dicomnet"``.

The builders are pure (time is passed in); only the writers do I/O. No builder takes a password
or pixel data, and a query identifier is reduced to its text attributes (``query_keys``): bulk
data VRs, group 7FE0 and long values never reach a record. A writer that fails is logged and
skipped: the audit trail must not take the node down (the log line says records are missing).

Event mapping (PS3.15 A.5.3): association accepted / released -> User Authentication (110114)
Login / Logout (110122 / 110123) of the calling AE; authentication failure -> User Authentication,
Login, outcome 4; TLS peer not authenticated -> Security Alert (110113), Node Authentication
(110126); refusal by permissions or limits -> Security Alert, Use of Restricted Function
(110132); C-STORE received -> DICOM Instances Transferred (110104), action C; C-FIND -> Query
(110112), action E; C-MOVE / C-GET -> DICOM Instances Transferred, action R.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from pydicom.multival import MultiValue

log = logging.getLogger("dicomnet.audit")


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value (code, coding scheme, meaning) as the audit message schema writes it."""

    code: str
    scheme: str
    meaning: str

    def to_json(self) -> dict[str, str]:
        return {"csd-code": self.code, "codeSystemName": self.scheme, "originalText": self.meaning}


# PS3.16 CID 400 (Audit Event ID)
APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
QUERY = Code("110112", "DCM", "Query")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
# CID 401 (Audit Event Type Code)
APPLICATION_START = Code("110120", "DCM", "Application Start")
APPLICATION_STOP = Code("110121", "DCM", "Application Stop")
LOGIN = Code("110122", "DCM", "Login")
LOGOUT = Code("110123", "DCM", "Logout")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")
# CID 402 (Audit Active Participant Role ID Code)
ROLE_APPLICATION = Code("110150", "DCM", "Application")
ROLE_DESTINATION = Code("110152", "DCM", "Destination Role ID")
ROLE_SOURCE = Code("110153", "DCM", "Source Role ID")
# Participant ID types
STATION_AE_TITLE = Code("110119", "DCM", "Station AE Title")
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")


class Action(StrEnum):
    """EventActionCode (RFC 3881 §5.1.2)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(IntEnum):
    """EventOutcomeIndicator (RFC 3881 §5.1.4)."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # the action was refused or failed without harm
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


@dataclass(frozen=True, slots=True)
class Participant:
    """An ActiveParticipant: an AE, a user or this node."""

    user_id: str
    is_requestor: bool
    role: Code | None = None
    user_id_type: Code | None = STATION_AE_TITLE
    user_name: str | None = None  # the authenticated (or claimed) user
    network_access_point: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"UserID": self.user_id, "UserIsRequestor": self.is_requestor}
        if self.user_id_type is not None:
            out["UserIDTypeCode"] = self.user_id_type.to_json()
        if self.user_name:
            out["UserName"] = self.user_name
        if self.role is not None:
            out["RoleIDCode"] = self.role.to_json()
        if self.network_access_point:
            out["NetworkAccessPointTypeCode"] = 2 if _is_ip(self.network_access_point) else 1
            out["NetworkAccessPointID"] = self.network_access_point
        return out


@dataclass(frozen=True, slots=True)
class ParticipantObject:
    """A ParticipantObjectIdentification: a study, a patient, a query's SOP class."""

    type_code: int  # 1 person, 2 system object
    role: int  # 1 patient, 3 report, ...
    id_type: Code
    object_id: str
    name: str | None = None
    query: Mapping[str, str] | None = None  # the query's text keys, not the encoded identifier
    detail: Mapping[str, str | int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ParticipantObjectTypeCode": self.type_code,
            "ParticipantObjectTypeCodeRole": self.role,
            "ParticipantObjectIDTypeCode": self.id_type.to_json(),
            "ParticipantObjectID": self.object_id,
        }
        if self.name:
            out["ParticipantObjectName"] = self.name
        if self.query is not None:
            out["ParticipantObjectQuery"] = dict(self.query)
        if self.detail:
            out["ParticipantObjectDetail"] = dict(self.detail)
        return out


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit message."""

    kind: str  # dicomnet's name: association, release, store, query, retrieve, refusal, ...
    event_id: Code
    action: Action
    outcome: Outcome
    time: datetime.datetime
    event_types: tuple[Code, ...] = ()
    outcome_description: str | None = None
    participants: tuple[Participant, ...] = ()
    objects: tuple[ParticipantObject, ...] = ()
    source_id: str = "dicomnet"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "EventID": self.event_id.to_json(),
            "EventActionCode": self.action.value,
            "EventDateTime": _timestamp(self.time),
            "EventOutcomeIndicator": int(self.outcome),
        }
        if self.outcome_description:
            event["EventOutcomeDescription"] = self.outcome_description
        if self.event_types:
            event["EventTypeCode"] = [code.to_json() for code in self.event_types]
        out: dict[str, Any] = {
            "EventIdentification": event,
            "ActiveParticipant": [p.to_json() for p in self.participants],
            # AuditSourceTypeCode 4: application server process tier (RFC 3881 §5.4.3)
            "AuditSourceIdentification": {
                "AuditSourceID": self.source_id,
                "AuditSourceTypeCode": 4,
            },
        }
        if self.objects:
            out["ParticipantObjectIdentification"] = [o.to_json() for o in self.objects]
        out["dicomnet"] = {"event": self.kind, **self.extra}
        return out

    def to_line(self) -> bytes:
        """One JSON object on one line, UTF-8, ending in a newline."""
        text = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8") + b"\n"


def _timestamp(when: datetime.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.isoformat(timespec="milliseconds")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


# -- what a record may say about a data set -------------------------------------------------------

_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
MAX_VALUE_LENGTH = 256


def query_keys(identifier: Any) -> dict[str, str]:
    """The text attributes of a query identifier (a pydicom ``Dataset``), keyword -> value, for
    ``ParticipantObjectQuery``: no bulk data VRs, no pixel data group (7FE0), sequences only
    counted, values cut at 256 characters."""
    keys: dict[str, str] = {}
    for element in identifier:
        if element.tag.group == 0x7FE0 or element.VR in _BULK_VRS:
            continue
        name = element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"
        if element.VR == "SQ":
            keys[name] = f"(sequence of {len(element.value or [])} items)"
            continue
        value = element.value
        if isinstance(value, bytes | bytearray):
            continue
        if value is None:
            text = ""
        elif isinstance(value, list | tuple | MultiValue):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        keys[name] = text[:MAX_VALUE_LENGTH]
    return keys


# -- who is on the other side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Party:
    """The peer of an event: its AE title, address, verified user and certificate subject."""

    ae_title: str
    host: str = ""
    username: str | None = None
    certificate_subject: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """This node, as the audit source and as a participant."""

    ae_title: str = "DICOMNET"
    host: str = field(default_factory=socket.gethostname)
    source_id: str = "dicomnet"


def _peer(party: Party, requestor: bool, role: Code | None) -> Participant:
    if not party.ae_title:  # refused before any A-ASSOCIATE-RQ: known only by its address
        return Participant(
            party.host or "unknown",
            requestor,
            role,
            user_id_type=None,
            network_access_point=party.host or None,
        )
    return Participant(
        party.ae_title,
        requestor,
        role,
        user_name=party.username,
        network_access_point=party.host or None,
    )


def _us(node: Node, requestor: bool, role: Code | None) -> Participant:
    return Participant(node.ae_title, requestor, role, network_access_point=node.host or None)


def _extra(party: Party, association: int | None, reason: str | None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if association is not None:
        extra["association"] = association
    if party.certificate_subject:
        extra["peer_certificate"] = party.certificate_subject
    if reason:
        extra["reason"] = reason
    return extra


def _patient(patient_id: str | None, patient_name: str | None) -> list[ParticipantObject]:
    if not patient_id:
        return []
    return [ParticipantObject(1, 1, PATIENT_NUMBER, patient_id, patient_name or None)]


def association_record(
    node: Node,
    peer: Party,
    time: datetime.datetime,
    *,
    association: int | None = None,
    released: bool = False,
    detail: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """An association accepted (Login) or ended (Logout, ``released=True``)."""
    extra = _extra(peer, association, None)
    extra.update(detail or {})
    return AuditRecord(
        "release" if released else "association",
        USER_AUTHENTICATION,
        Action.EXECUTE,
        Outcome.SUCCESS,
        time,
        (LOGOUT if released else LOGIN,),
        participants=(_peer(peer, True, None), _us(node, False, ROLE_APPLICATION)),
        source_id=node.source_id,
        extra=extra,
    )


def application_record(node: Node, time: datetime.datetime, *, started: bool) -> AuditRecord:
    """The node started or stopped serving (Application Activity, PS3.15 A.5.3.1)."""
    return AuditRecord(
        "start" if started else "stop",
        APPLICATION_ACTIVITY,
        Action.EXECUTE,
        Outcome.SUCCESS,
        time,
        (APPLICATION_START if started else APPLICATION_STOP,),
        participants=(_us(node, False, ROLE_APPLICATION),),
        source_id=node.source_id,
    )


def authentication_failure_record(
    node: Node, peer: Party, time: datetime.datetime, reason: str, *, association: int | None = None
) -> AuditRecord:
    """A user identity that failed (the reason names the user, never the passcode)."""
    return AuditRecord(
        "authentication-failure",
        USER_AUTHENTICATION,
        Action.EXECUTE,
        Outcome.MINOR_FAILURE,
        time,
        (LOGIN,),
        reason,
        (_peer(peer, True, None), _us(node, False, ROLE_APPLICATION)),
        source_id=node.source_id,
        extra=_extra(peer, association, reason),
    )


def node_authentication_failure_record(
    node: Node, host: str, time: datetime.datetime, reason: str
) -> AuditRecord:
    """A TLS peer that did not authenticate (bad, expired or missing certificate, no TLS)."""
    return AuditRecord(
        "node-authentication-failure",
        SECURITY_ALERT,
        Action.EXECUTE,
        Outcome.MINOR_FAILURE,
        time,
        (NODE_AUTHENTICATION,),
        reason,
        (
            Participant(host, True, None, user_id_type=None, network_access_point=host or None),
            _us(node, False, ROLE_APPLICATION),
        ),
        source_id=node.source_id,
        extra={"reason": reason},
    )


def refusal_record(
    node: Node,
    peer: Party,
    time: datetime.datetime,
    reason: str,
    *,
    association: int | None = None,
    answer: str | None = None,
) -> AuditRecord:
    """A refusal by the permission rules or the limits (``answer``: the A-ASSOCIATE-RJ or the
    status it was answered with)."""
    extra = _extra(peer, association, reason)
    if answer:
        extra["answer"] = answer
    return AuditRecord(
        "refusal",
        SECURITY_ALERT,
        Action.EXECUTE,
        Outcome.MINOR_FAILURE,
        time,
        (RESTRICTED_FUNCTION,),
        reason,
        (_peer(peer, True, None), _us(node, False, ROLE_APPLICATION)),
        source_id=node.source_id,
        extra=extra,
    )


def store_record(
    node: Node,
    peer: Party,
    time: datetime.datetime,
    *,
    study_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    patient_id: str | None = None,
    patient_name: str | None = None,
    status: int = 0,
    association: int | None = None,
) -> AuditRecord:
    """An instance received by C-STORE (the peer is the source, this node the destination)."""
    outcome = (
        Outcome.SUCCESS if status in (0x0000, 0xB000, 0xB006, 0xB007) else Outcome.MINOR_FAILURE
    )
    study = ParticipantObject(
        2,
        3,
        STUDY_INSTANCE_UID,
        study_uid,
        detail={"SOPClassUID": sop_class_uid, "SOPInstanceUID": sop_instance_uid},
    )
    extra = _extra(peer, association, None)
    extra["status"] = f"0x{status:04X}"
    return AuditRecord(
        "store",
        INSTANCES_TRANSFERRED,
        Action.CREATE,
        outcome,
        time,
        outcome_description=None if outcome == Outcome.SUCCESS else f"status 0x{status:04X}",
        participants=(_peer(peer, True, ROLE_SOURCE), _us(node, False, ROLE_DESTINATION)),
        objects=(study, *_patient(patient_id, patient_name)),
        source_id=node.source_id,
        extra=extra,
    )


def query_record(
    node: Node,
    peer: Party,
    time: datetime.datetime,
    *,
    sop_class_uid: str,
    identifier: Any = None,
    status: int = 0,
    matches: int | None = None,
    association: int | None = None,
) -> AuditRecord:
    """A C-FIND: who asked, with which model and keys (text only), and how it ended."""
    outcome = Outcome.SUCCESS if status in (0x0000, 0xFE00) else Outcome.MINOR_FAILURE
    keys = query_keys(identifier) if identifier is not None else {}
    detail: dict[str, str | int] = {} if matches is None else {"matches": matches}
    extra = _extra(peer, association, None)
    extra["status"] = f"0x{status:04X}"
    return AuditRecord(
        "query",
        QUERY,
        Action.EXECUTE,
        outcome,
        time,
        outcome_description=None if outcome == Outcome.SUCCESS else f"status 0x{status:04X}",
        participants=(_peer(peer, True, ROLE_SOURCE), _us(node, False, ROLE_DESTINATION)),
        objects=(ParticipantObject(2, 3, SOP_CLASS_UID, sop_class_uid, query=keys, detail=detail),),
        source_id=node.source_id,
        extra=extra,
    )


def retrieve_record(
    node: Node,
    peer: Party,
    time: datetime.datetime,
    *,
    operation: str,
    destination: Party,
    study_uids: Iterable[str],
    patient_id: str | None = None,
    patient_name: str | None = None,
    completed: int = 0,
    failed: int = 0,
    warning: int = 0,
    status: int = 0,
    association: int | None = None,
) -> AuditRecord:
    """A C-MOVE or C-GET (``operation`` "move"/"get"): this node is the source, ``destination``
    receives (the peer itself for C-GET), the peer asked."""
    outcome = (
        Outcome.SUCCESS if status in (0x0000, 0xB000) and not failed else Outcome.MINOR_FAILURE
    )
    participants = [_us(node, False, ROLE_SOURCE), _peer(destination, False, ROLE_DESTINATION)]
    if destination.ae_title != peer.ae_title or destination.host != peer.host:
        participants.append(_peer(peer, True, None))
    else:
        participants[1] = _peer(destination, True, ROLE_DESTINATION)
    counts: dict[str, str | int] = {"completed": completed, "failed": failed, "warning": warning}
    studies = tuple(
        ParticipantObject(2, 3, STUDY_INSTANCE_UID, uid, detail=counts) for uid in study_uids
    )
    extra = _extra(peer, association, None)
    extra.update({"operation": operation, "status": f"0x{status:04X}"})
    return AuditRecord(
        "retrieve",
        INSTANCES_TRANSFERRED,
        Action.READ,
        outcome,
        time,
        outcome_description=(
            None
            if outcome == Outcome.SUCCESS
            else f"status 0x{status:04X}, {failed} sub-operation(s) failed"
        ),
        participants=tuple(participants),
        objects=(*studies, *_patient(patient_id, patient_name)),
        source_id=node.source_id,
        extra=extra,
    )


# -- writers --------------------------------------------------------------------------------------


class AuditWriter(Protocol):
    def write(self, record: AuditRecord) -> None: ...

    def close(self) -> None: ...


class JsonLinesWriter:
    """Appends one JSON object per line to a file, each with a single ``write`` on a descriptor
    opened ``O_APPEND`` (so processes of ``serve --workers`` do not interleave records); created
    readable by the owner only, since records name patients."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600
        )

    def write(self, record: AuditRecord) -> None:
        line = memoryview(record.to_line())
        with self._lock:
            if self._fd is None:
                raise ValueError(f"audit file {self.path} is closed")
            while line:
                written = os.write(self._fd, line)
                line = line[written:]
            if self.fsync:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# RFC 5424 §6.2.1: facility 10 is security/authorization (authpriv), as IHE ATNA uses.
AUTHPRIV = 10
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5


def _header_field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, or "-" when empty."""
    cleaned = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return cleaned or "-"


def format_syslog(
    record: AuditRecord,
    *,
    facility: int = AUTHPRIV,
    hostname: str | None = None,
    app_name: str = "dicomnet",
    procid: str | None = None,
    msgid: str = "DICOM+AUDIT",
) -> bytes:
    """An RFC 5424 message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM JSON``.
    Severity is notice for a success and warning for a failure."""
    severity = SEVERITY_NOTICE if record.outcome == Outcome.SUCCESS else SEVERITY_WARNING
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            _timestamp(record.time),
            _header_field(hostname if hostname is not None else socket.gethostname(), 255),
            _header_field(app_name, 48),
            _header_field(procid if procid is not None else str(os.getpid()), 128),
            _header_field(msgid, 32),
            "-",  # no structured data
        )
    )
    body = json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":"))
    return header.encode("ascii") + b" \xef\xbb\xbf" + body.encode("utf-8")


class SyslogWriter:
    """Sends each record as one RFC 5424 datagram: over UDP to ``(host, port)`` (RFC 5426),
    or to a local datagram socket such as ``/dev/log``."""

    def __init__(
        self,
        address: tuple[str, int] | str = ("127.0.0.1", 514),
        *,
        facility: int = AUTHPRIV,
        app_name: str = "dicomnet",
        hostname: str | None = None,
    ) -> None:
        self.address: Any = address
        self.facility = facility
        self.app_name = app_name
        self.hostname = hostname if hostname is not None else socket.gethostname()
        if isinstance(address, str):
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        else:
            info = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)
            self._sock = socket.socket(info[0][0], socket.SOCK_DGRAM)
            self.address = info[0][4]

    def write(self, record: AuditRecord) -> None:
        message = format_syslog(
            record, facility=self.facility, hostname=self.hostname, app_name=self.app_name
        )
        self._sock.sendto(message, self.address)

    def close(self) -> None:
        self._sock.close()


class Auditor:
    """Builds records for this node and hands them to every writer; a failing writer is logged
    and the others still get the record."""

    def __init__(self, writers: Sequence[AuditWriter], node: Node | None = None) -> None:
        self.writers = list(writers)
        self.node = node or Node()
        self.failures = 0

    @staticmethod
    def now() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def emit(self, record: AuditRecord) -> None:
        for writer in self.writers:
            try:
                writer.write(record)
            except (OSError, ValueError) as exc:
                self.failures += 1
                log.error("audit record %s not written by %s: %s", record.kind, writer, exc)

    def application(self, *, started: bool) -> None:
        self.emit(application_record(self.node, self.now(), started=started))

    def association(self, peer: Party, **kwargs: Any) -> None:
        self.emit(association_record(self.node, peer, self.now(), **kwargs))

    def authentication_failure(self, peer: Party, reason: str, **kwargs: Any) -> None:
        self.emit(authentication_failure_record(self.node, peer, self.now(), reason, **kwargs))

    def node_authentication_failure(self, host: str, reason: str) -> None:
        self.emit(node_authentication_failure_record(self.node, host, self.now(), reason))

    def refusal(self, peer: Party, reason: str, **kwargs: Any) -> None:
        self.emit(refusal_record(self.node, peer, self.now(), reason, **kwargs))

    def store(self, peer: Party, **kwargs: Any) -> None:
        self.emit(store_record(self.node, peer, self.now(), **kwargs))

    def query(self, peer: Party, **kwargs: Any) -> None:
        self.emit(query_record(self.node, peer, self.now(), **kwargs))

    def retrieve(self, peer: Party, **kwargs: Any) -> None:
        self.emit(retrieve_record(self.node, peer, self.now(), **kwargs))

    def close(self) -> None:
        for writer in self.writers:
            try:
                writer.close()
            except OSError as exc:
                log.error("closing audit writer %s: %s", writer, exc)
