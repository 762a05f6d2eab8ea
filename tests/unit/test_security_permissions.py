"""security.permissions: rules per calling AE title, the decisions and the standard answers
they map to, and the [permissions] table loader."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from dicomnet.dimse.status import Status
from dicomnet.pdu import RejectReason, RejectResult, RejectSource
from dicomnet.security.decisions import SecurityConfigError
from dicomnet.security.permissions import (
    Peer,
    Permissions,
    ServiceName,
    load_permissions,
    service_for_abstract_syntax,
    service_for_command,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
WORKLIST = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"  # an N-service SOP class

CONFIG = """
[users]
alice = "$scrypt$..."

[permissions]
allow_unknown = false

[permissions.ae.MODALITY1]
services = ["echo", "store"]
hosts = ["10.0.0.5", "192.168.1.0/24", "2001:db8::/32"]

[permissions.ae.VIEWER]
services = ["echo", "find", "move", "get"]
move_destinations = ["VIEWER", "LAPTOP"]
certificate_subject = "CN=viewer,O=Hospital"

[permissions.ae."READING ROOM"]
services = ["*"]
users = ["alice"]
"""


@pytest.fixture
def permissions() -> Permissions:
    data = tomllib.loads(CONFIG)
    return load_permissions(data["permissions"], known_users=data["users"])


def test_service_mapping() -> None:
    assert service_for_abstract_syntax("1.2.840.10008.1.1") == ServiceName.ECHO
    assert service_for_abstract_syntax(CT) == ServiceName.STORE
    assert service_for_abstract_syntax(STUDY_FIND) == ServiceName.FIND
    assert service_for_abstract_syntax(WORKLIST) == ServiceName.FIND
    assert service_for_abstract_syntax(STUDY_MOVE) == ServiceName.MOVE
    assert service_for_abstract_syntax(PATIENT_GET) == ServiceName.GET
    assert service_for_abstract_syntax(MPPS) is None
    assert service_for_command(0x0001) == ServiceName.STORE
    assert service_for_command(0x0021) == ServiceName.MOVE
    assert service_for_command(0x0140) is None  # N-CREATE


def test_unknown_peer_is_rejected_as_calling_ae_not_recognized(permissions: Permissions) -> None:
    decision = permissions.check_association(Peer("INTRUDER", "10.0.0.66"))
    assert not decision.allowed
    assert decision.reason == "calling AE title 'INTRUDER' is not a known peer"
    assert decision.reject is not None
    assert decision.reject == (
        RejectResult.PERMANENT,
        RejectSource.SERVICE_USER,
        RejectReason.CALLING_AE_NOT_RECOGNIZED,
    )
    rj = decision.reject.to_pdu()
    assert (rj.result, rj.source, rj.reason) == (1, 1, 3)
    assert "calling AE title not recognized" in decision.reject.describe()


def test_addresses(permissions: Permissions) -> None:
    assert permissions.check_association(Peer("MODALITY1", "10.0.0.5")).allowed
    assert permissions.check_association(Peer("MODALITY1", "192.168.1.77")).allowed
    assert permissions.check_association(Peer("MODALITY1", "::ffff:10.0.0.5")).allowed
    assert permissions.check_association(Peer("MODALITY1", "2001:db8::1")).allowed
    wrong = permissions.check_association(Peer("MODALITY1", "10.0.0.6"))
    assert not wrong.allowed and wrong.reject is not None and wrong.reject.reason == 3
    assert "10.0.0.6" in wrong.reason
    assert not permissions.check_association(Peer("MODALITY1", "not-an-address")).allowed


def test_certificate_subject(permissions: Permissions) -> None:
    assert permissions.check_association(Peer("VIEWER", "1.2.3.4", "CN=viewer,O=Hospital")).allowed
    assert permissions.check_association(Peer("VIEWER", "1.2.3.4", "O=hospital,CN=Viewer")).allowed
    plain = permissions.check_association(Peer("VIEWER", "1.2.3.4"))
    assert not plain.allowed and "no verified TLS certificate" in plain.reason
    other = permissions.check_association(Peer("VIEWER", "1.2.3.4", "CN=modality1,O=Hospital"))
    assert not other.allowed and other.reject is not None and other.reject.reason == 3


def test_users(permissions: Permissions) -> None:
    assert permissions.check_association(Peer("READING ROOM", username="alice")).allowed
    anonymous = permissions.check_association(Peer("READING ROOM"))
    assert not anonymous.allowed
    assert anonymous.reject == (1, 2, 1)  # PS3.7 D.3.3.7: permanent, ACSE, no reason given
    bob = permissions.check_association(Peer("READING ROOM", username="bob"))
    assert not bob.allowed and bob.reason == "user 'bob' may not use 'READING ROOM'"


def test_contexts_and_services(permissions: Permissions) -> None:
    assert permissions.check_context("MODALITY1", CT).allowed
    refused = permissions.check_context("MODALITY1", STUDY_FIND)
    assert not refused.allowed and refused.reject is None and refused.status is None
    assert refused.reason == "'MODALITY1' may not use find"
    assert not permissions.check_context("MODALITY1", MPPS).allowed
    assert permissions.check_context("READING ROOM", MPPS).allowed  # "*" covers N-services
    assert permissions.services_for("MODALITY1") == {ServiceName.ECHO, ServiceName.STORE}
    assert permissions.services_for("INTRUDER") == frozenset()
    assert permissions.services_for("READING ROOM") is None

    store = permissions.check_service("VIEWER", ServiceName.STORE)
    assert not store.allowed and store.status == Status.NOT_AUTHORIZED == 0x0124
    assert permissions.check_service("VIEWER", ServiceName.FIND).allowed


def test_move_destinations(permissions: Permissions) -> None:
    assert permissions.check_move_destination("VIEWER", "LAPTOP").allowed
    elsewhere = permissions.check_move_destination("VIEWER", "EXFILTRATE")
    assert not elsewhere.allowed and elsewhere.status == Status.MOVE_DESTINATION_UNKNOWN == 0xA801
    assert elsewhere.reason == "'VIEWER' may not move to 'EXFILTRATE'"
    no_move = permissions.check_move_destination("MODALITY1", "VIEWER")
    assert not no_move.allowed and no_move.status == 0x0124
    assert permissions.check_move_destination("READING ROOM", "ANYWHERE").allowed  # no list


def test_unknown_peers_when_allowed() -> None:
    open_node = load_permissions({"allow_unknown": True, "unknown_services": ["echo"]})
    assert open_node.check_association(Peer("ANYONE")).allowed
    assert open_node.check_context("ANYONE", "1.2.840.10008.1.1").allowed
    assert not open_node.check_context("ANYONE", CT).allowed
    assert not open_node.check_service("ANYONE", ServiceName.STORE).allowed
    everything = Permissions.allow_all()
    assert everything.check_context("ANYONE", MPPS).allowed
    assert everything.check_move_destination("ANYONE", "X").allowed


def test_reasons_cut_long_peer_values(permissions: Permissions) -> None:
    decision = permissions.check_association(Peer("A" * 16, "10.0.0.1"))
    assert len(decision.reason) < 100
    weird = permissions.check_association(Peer("BAD\x1bTITLE"))
    assert "\x1b" not in weird.reason


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([], "must be a table"),
        ({"allow_unknwon": True}, r"unknown key\(s\) allow_unknwon"),
        ({"allow_unknown": "yes"}, "expected true or false"),
        ({"ae": {"X": {"hosts": ["10.0.0.1"]}}}, "services is missing"),
        ({"ae": {"X": {"services": ["echo", "stor"]}}}, "unknown service 'stor'"),
        ({"ae": {"X": {"services": "echo"}}}, "expected a list of strings"),
        ({"ae": {"X": {"services": ["*", "echo"]}}}, "stands alone"),
        ({"ae": {"X": {"services": ["echo"], "host": []}}}, r"unknown key\(s\) host"),
        ({"ae": {"X": {"services": ["echo"], "hosts": ["pacs.local"]}}}, "not resolved"),
        ({"ae": {"X": {"services": ["echo"], "certificate_subject": "viewer"}}}, "TYPE=value"),
        ({"ae": {"X": {"services": ["move"], "move_destinations": ["A\\B"]}}}, "AE title"),
        ({"ae": {"THIS AE TITLE IS TOO LONG": {"services": ["echo"]}}}, "not an AE title"),
        ({"ae": {"X": {"services": ["echo"], "users": ["bob"]}}}, "'bob' not in the"),
        ({"ae": {"X": {"services": ["echo"]}, " X ": {"services": ["echo"]}}}, "given twice"),
        ({"ae": {"X": "echo"}}, "must be a table"),
    ],
)
def test_loader_errors(table: Any, message: str) -> None:
    with pytest.raises(SecurityConfigError, match=message):
        load_permissions(table, known_users=["alice"])


def test_loader_error_names_the_table() -> None:
    with pytest.raises(SecurityConfigError) as info:
        load_permissions({"ae": {"MODALITY1": {"services": ["eco"]}}})
    assert str(info.value).startswith('[permissions.ae."MODALITY1"] services: unknown service')
