"""Negotiation: acceptor decisions and requestor reading of the answer (PS3.8 §9.3.2-9.3.3,
PS3.7 Annex D)."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
)

from dicomnet.errors import NegotiationError
from dicomnet.negotiation import (
    ProposedContext,
    build_accept,
    build_request,
    check_request,
    read_accept,
    request_from_pdu,
)
from dicomnet.pdu import (
    A_ASSOCIATE_RQ,
    PresentationContextResult,
    RejectReason,
    RejectSource,
    UserIdentityRQ,
)
from dicomnet.uids import VERIFICATION

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _rq(**kwargs: object) -> A_ASSOCIATE_RQ:
    contexts = [
        ProposedContext(VERIFICATION, [ImplicitVRLittleEndian]),
        ProposedContext(CTImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian]),
        ProposedContext(MRImageStorage, [ExplicitVRBigEndian]),
    ]
    return build_request("SCP", "SCU", contexts, **kwargs)  # type: ignore[arg-type]


def test_context_ids_are_odd_and_in_order() -> None:
    rq = _rq()
    assert [c.context_id for c in rq.presentation_contexts] == [1, 3, 5]


def test_accept_picks_the_acceptors_preference() -> None:
    rq = _rq()
    request = request_from_pdu(rq)
    ct = request.presentation_contexts[1]
    assert ct.accept([ExplicitVRLittleEndian, JPEGBaseline8Bit])
    assert ct.transfer_syntax == ExplicitVRLittleEndian


def test_accept_without_common_syntax_records_the_reason() -> None:
    request = request_from_pdu(_rq())
    mr = request.presentation_contexts[2]
    assert not mr.accept(SYNTAXES)
    assert mr.result == PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED


def test_undecided_contexts_are_abstract_syntax_not_supported() -> None:
    rq = _rq()
    request = request_from_pdu(rq)
    request.presentation_contexts[0].accept(SYNTAXES)
    request.presentation_contexts[2].reject()
    ac, negotiated = build_accept(rq, request)
    results = {c.context_id: c.result for c in ac.presentation_contexts}
    assert results == {
        1: PresentationContextResult.ACCEPTANCE,
        3: PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED,
        5: PresentationContextResult.USER_REJECTION,
    }
    assert set(negotiated.contexts) == {1}
    assert negotiated.contexts[1].transfer_syntax == ImplicitVRLittleEndian


def test_requestor_reads_the_accept() -> None:
    rq = _rq(max_pdu_length=32768)
    request = request_from_pdu(rq)
    for pc in request.presentation_contexts:
        pc.accept(SYNTAXES)
    ac, server_side = build_accept(rq, request, our_max_pdu_length=65536)
    client_side = read_accept(rq, ac)
    assert set(client_side.contexts) == {1, 3}
    assert client_side.peer_max_pdu_length == 65536
    assert server_side.peer_max_pdu_length == 32768
    assert client_side.contexts[3].transfer_syntax == ExplicitVRLittleEndian


def test_async_window_is_the_minimum_both_ways() -> None:
    rq = _rq(async_ops=(8, 1))
    request = request_from_pdu(rq)
    request.max_operations_performed = 4
    for pc in request.presentation_contexts:
        pc.accept(SYNTAXES)
    ac, server_side = build_accept(rq, request)
    window = ac.user_information.async_ops_window
    # The answer keeps the requestor's point of view (PS3.7 D.3.3.3): it may invoke 4 (what
    # we perform), and perform 1 (we invoke nothing asynchronously).
    assert window is not None and (window.invoked, window.performed) == (4, 1)
    client_side = read_accept(rq, ac)
    assert client_side.max_operations_invoked == 4
    assert server_side.max_operations_performed == 4


def test_no_window_without_a_proposal() -> None:
    rq = _rq()
    request = request_from_pdu(rq)
    ac, _ = build_accept(rq, request)
    assert ac.user_information.async_ops_window is None


def test_role_selection_for_c_get() -> None:
    contexts = [ProposedContext(CTImageStorage, SYNTAXES, scu_role=True, scp_role=True)]
    rq = build_request("SCP", "SCU", contexts)
    request = request_from_pdu(rq)
    pc = request.presentation_contexts[0]
    assert (pc.proposed_scu_role, pc.proposed_scp_role) == (True, True)
    pc.accept(SYNTAXES)
    ac, server_side = build_accept(rq, request)
    # The acceptor may now act as SCU of storage (send C-STORE-RQs to the requestor).
    assert server_side.contexts[1].scu_role
    client_side = read_accept(rq, ac)
    assert client_side.contexts[1].scp_role


def test_protocol_version_and_empty_contexts_are_rejected() -> None:
    rq = _rq()
    rq.protocol_version = 2  # bit 0 (version 1) not set
    rejection = check_request(rq)
    assert rejection is not None
    assert rejection.pdu.source == RejectSource.SERVICE_PROVIDER_ACSE
    assert rejection.pdu.reason == RejectReason.PROTOCOL_VERSION_NOT_SUPPORTED
    rq = _rq()
    rq.presentation_contexts = []
    assert check_request(rq) is not None
    rq = _rq()
    rq.application_context = "1.2.3"
    rejection = check_request(rq)
    assert rejection is not None
    assert rejection.pdu.reason == RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED
    assert check_request(_rq()) is None


def test_user_identity_response_only_when_requested() -> None:
    identity = UserIdentityRQ(2, True, b"user", b"secret")
    rq = _rq(user_identity=identity)
    request = request_from_pdu(rq)
    assert request.user_identity == identity
    request.user_identity_response = b""
    ac, _ = build_accept(rq, request)
    assert ac.user_information.user_identity_ac is not None
    rq2 = _rq(user_identity=UserIdentityRQ(1, False, b"user"))
    request2 = request_from_pdu(rq2)
    request2.user_identity_response = b""
    ac2, _ = build_accept(rq2, request2)
    assert ac2.user_information.user_identity_ac is None


def test_a_maximum_pdu_length_too_small_for_any_data_is_refused() -> None:
    # A P-DATA-TF of fewer than 7 bytes holds no PDV with data (PS3.8 §9.3.5: 6 header bytes).
    assert check_request(_rq(max_pdu_length=6)) is not None
    assert check_request(_rq(max_pdu_length=7)) is None
    assert check_request(_rq(max_pdu_length=0)) is None  # 0 = unlimited
    rq = _rq(max_pdu_length=16384)
    request = request_from_pdu(rq)
    for pc in request.presentation_contexts:
        pc.accept(SYNTAXES)
    ac, _ = build_accept(rq, request, our_max_pdu_length=3)
    with pytest.raises(NegotiationError, match="maximum PDU length 3"):
        read_accept(rq, ac)


def test_empty_ae_titles_are_refused_with_the_title_named() -> None:
    """PS3.8 §9.3.2: an AE title of 16 spaces shall not be used; the rejection names which."""
    rq = _rq()
    rq.called_ae_title = ""
    rejection = check_request(rq)
    assert rejection is not None
    assert rejection.pdu.reason == RejectReason.CALLED_AE_NOT_RECOGNIZED
    assert rejection.why == "the called AE title is empty"
    rq = _rq()
    rq.calling_ae_title = ""
    rejection = check_request(rq)
    assert rejection is not None
    assert rejection.pdu.reason == RejectReason.CALLING_AE_NOT_RECOGNIZED
    assert "calling" in rejection.why


def test_the_association_limit_is_a_transient_provider_rejection() -> None:
    """PS3.8 Table 9-21: local-limit-exceeded, source 3 (presentation), result 2 (transient)."""
    assert check_request(_rq(), active=4, max_associations=4) is None
    rejection = check_request(_rq(), active=5, max_associations=4)
    assert rejection is not None
    assert (rejection.pdu.result, rejection.pdu.source, rejection.pdu.reason) == (2, 3, 2)
    assert rejection.why == "4 associations at once"
    assert check_request(_rq(), active=10**6) is None  # no limit given


def test_the_first_failed_check_wins() -> None:
    """A request that fails several checks gets the rejection of the first (protocol checks
    before AE titles before the limit), and the reason text says which."""
    rq = _rq(max_pdu_length=6)
    rq.called_ae_title = ""
    rejection = check_request(rq, active=9, max_associations=1)
    assert rejection is not None
    assert rejection.why == "maximum PDU length 6 is too small"
    rq.presentation_contexts = []
    rejection = check_request(rq, active=9, max_associations=1)
    assert rejection is not None and rejection.why == "no presentation context proposed"
