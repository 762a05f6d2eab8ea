"""Association negotiation (PS3.8 §7.1, PS3.7 Annex D): pure functions and objects from a request
and a policy to a result.

Rules: no I/O. The acceptor side turns an A-ASSOCIATE-RQ into an ``AssociationRequest`` whose
presentation contexts a service accepts or rejects one by one, then builds the A-ASSOCIATE-AC (or
-RJ) from the decisions. The requestor side builds the A-ASSOCIATE-RQ and reads the AC into the
``NegotiatedContext`` table the DIMSE layer uses. Maximum PDU lengths of 0 mean "unlimited"
(PS3.8 D.1); asynchronous operations windows of 0 mean "unlimited" (PS3.7 D.3.3.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydicom.uid import UID

from dicomnet.errors import NegotiationError
from dicomnet.pdu import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    DICOM_APPLICATION_CONTEXT,
    AsynchronousOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextACItem,
    PresentationContextResult,
    PresentationContextRQItem,
    RejectReason,
    RejectResult,
    RejectSource,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    SubItem,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)
from dicomnet.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, is_valid_uid

# The largest P-DATA-TF we offer to receive; peers fill it, so fewer PDUs and syscalls per byte.
DEFAULT_MAX_PDU_LENGTH = 1 << 20


@dataclass(slots=True)
class PresentationContext:
    """One presentation context as the acceptor decides it (or as the requestor proposes it).

    ``accept()`` picks the first syntax of the acceptor's preference list that the requestor
    proposed, as fo-dicom's ``AcceptTransferSyntaxes`` does.
    """

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]
    result: PresentationContextResult | None = None
    transfer_syntax: str | None = None
    # SCP/SCU role selection (PS3.7 D.3.3.4): what the requestor proposed, None when it did not.
    proposed_scu_role: bool | None = None
    proposed_scp_role: bool | None = None
    scu_role: bool | None = None
    scp_role: bool | None = None

    @property
    def accepted(self) -> bool:
        return self.result == PresentationContextResult.ACCEPTANCE

    def accept(self, *syntaxes: str | Iterable[str]) -> bool:
        """Accept with the first of ``syntaxes`` (the acceptor's preference order) that was
        proposed; without arguments, the requestor's first. Returns False, and records "transfer
        syntaxes not supported", when none matches."""
        preferred: list[str] = []
        for item in syntaxes:
            if isinstance(item, str):
                preferred.append(item)
            else:
                preferred.extend(item)
        if not preferred:
            preferred = self.transfer_syntaxes[:1]
        offered = set(self.transfer_syntaxes)
        for syntax in preferred:
            if syntax in offered and is_valid_uid(syntax):
                self.result = PresentationContextResult.ACCEPTANCE
                self.transfer_syntax = syntax
                return True
        self.result = PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
        self.transfer_syntax = None
        return False

    def reject(
        self, reason: PresentationContextResult = PresentationContextResult.USER_REJECTION
    ) -> None:
        """Reject this context with the given result/reason (PS3.8 Table 9-18)."""
        if reason == PresentationContextResult.ACCEPTANCE:
            raise ValueError("reject() needs a rejection reason, not ACCEPTANCE")
        self.result = reason
        self.transfer_syntax = None

    def accept_roles(self, scu_role: bool | None = None, scp_role: bool | None = None) -> None:
        """Answer a role selection proposal; by default grant what was proposed."""
        self.scu_role = self.proposed_scu_role if scu_role is None else scu_role
        self.scp_role = self.proposed_scp_role if scp_role is None else scp_role


@dataclass(slots=True)
class AssociationDecision:
    """What a service answered: an accept, or a reject with its result/source/reason."""

    accepted: bool
    result: int = RejectResult.PERMANENT
    source: int = RejectSource.SERVICE_USER
    reason: int = RejectReason.NO_REASON


@dataclass(slots=True)
class AssociationRequest:
    """An A-ASSOCIATE indication as a service sees it (fo-dicom's ``OnReceiveAssociationRequest``).

    The service calls ``pc.accept(...)`` / ``pc.reject()`` on presentation contexts and returns
    ``request.accept()`` or ``request.reject(...)``.
    """

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: list[PresentationContext]
    peer_host: str = ""
    peer_port: int = 0
    max_pdu_length: int = 0
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    async_ops_invoked: int = 1
    async_ops_performed: int = 1
    user_identity: UserIdentityRQ | None = None
    extended_negotiation: dict[str, bytes] = field(default_factory=dict)
    common_extended_negotiation: list[SOPClassCommonExtendedNegotiation] = field(
        default_factory=list
    )
    # Filled by the service: the server response of a user identity negotiation, the
    # extended negotiation answers, and how many operations it performs at once.
    user_identity_response: bytes | None = None
    extended_negotiation_response: dict[str, bytes] = field(default_factory=dict)
    max_operations_performed: int = 1

    def accept(self) -> AssociationDecision:
        return AssociationDecision(accepted=True)

    def reject(
        self,
        result: int = RejectResult.PERMANENT,
        source: int = RejectSource.SERVICE_USER,
        reason: int = RejectReason.NO_REASON,
    ) -> AssociationDecision:
        return AssociationDecision(accepted=False, result=result, source=source, reason=reason)

    def context(self, context_id: int) -> PresentationContext | None:
        for pc in self.presentation_contexts:
            if pc.context_id == context_id:
                return pc
        return None


@dataclass(slots=True, frozen=True)
class NegotiatedContext:
    """An accepted presentation context with its roles, as the DIMSE layer uses it."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    scu_role: bool = True
    scp_role: bool = True


@dataclass(slots=True)
class Negotiated:
    """The outcome of a successful negotiation, for one side of the association."""

    contexts: dict[int, NegotiatedContext]
    peer_max_pdu_length: int  # 0 = unlimited
    our_max_pdu_length: int
    max_operations_invoked: int = 1  # by us
    max_operations_performed: int = 1  # by us
    peer_implementation_class_uid: str | None = None
    peer_implementation_version_name: str | None = None
    user_identity_response: bytes | None = None
    extended_negotiation: dict[str, bytes] = field(default_factory=dict)

    def find_context(
        self,
        abstract_syntax: str,
        transfer_syntax: str | None = None,
        *,
        scp: bool = False,
        scu: bool = False,
    ) -> NegotiatedContext | None:
        """The first accepted context for an abstract syntax (and transfer syntax if given);
        with ``scp=True``/``scu=True`` only contexts where we may act in that role (role
        selection)."""
        for ctx in self.contexts.values():
            if ctx.abstract_syntax != abstract_syntax:
                continue
            if transfer_syntax is not None and ctx.transfer_syntax != transfer_syntax:
                continue
            if (scp and not ctx.scp_role) or (scu and not ctx.scu_role):
                continue
            return ctx
        return None


# --- acceptor -----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send, and why in words (for the log)."""

    pdu: A_ASSOCIATE_RJ
    why: str


def check_request(
    rq: A_ASSOCIATE_RQ, *, active: int = 0, max_associations: int | None = None
) -> Rejection | None:
    """The service provider's checks before a service sees the request (PS3.8 §9.2, AE-6):
    the protocol version, the application context, at least one presentation context, a
    maximum PDU length that can carry data, non-empty AE titles, and (with
    ``max_associations``) the number of associations open now, this one included.

    Returns the rejection, or None when the request may go to the service.
    """
    permanent, user = RejectResult.PERMANENT, RejectSource.SERVICE_USER
    if not rq.protocol_version & 0x0001:
        return Rejection(
            A_ASSOCIATE_RJ(
                permanent,
                RejectSource.SERVICE_PROVIDER_ACSE,
                RejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
            ),
            f"protocol version 0x{rq.protocol_version:04X} lacks version 1 (bit 0)",
        )
    if rq.application_context != DICOM_APPLICATION_CONTEXT:
        return Rejection(
            A_ASSOCIATE_RJ(permanent, user, RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED),
            f"application context {rq.application_context!r} is not DICOM's",
        )
    if not rq.presentation_contexts:
        return Rejection(
            A_ASSOCIATE_RJ(permanent, user, RejectReason.NO_REASON),
            "no presentation context proposed",
        )
    max_length = rq.user_information.maximum_length
    if max_length is not None and 0 < max_length < MIN_PEER_MAX_PDU_LENGTH:
        # A P-DATA-TF this small cannot carry a PDV with any data (PS3.8 §9.3.5: 6 bytes of
        # PDV item header), so no message could ever be sent to this peer.
        return Rejection(
            A_ASSOCIATE_RJ(permanent, user, RejectReason.NO_REASON),
            f"maximum PDU length {max_length} is too small",
        )
    # PS3.8 §9.3.2: an AE title of 16 spaces ("no name") shall not be used.
    if not rq.called_ae_title:
        return Rejection(
            A_ASSOCIATE_RJ(permanent, user, RejectReason.CALLED_AE_NOT_RECOGNIZED),
            "the called AE title is empty",
        )
    if not rq.calling_ae_title:
        return Rejection(
            A_ASSOCIATE_RJ(permanent, user, RejectReason.CALLING_AE_NOT_RECOGNIZED),
            "the calling AE title is empty",
        )
    if max_associations is not None and active > max_associations:
        return Rejection(
            A_ASSOCIATE_RJ(
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                RejectReason.LOCAL_LIMIT_EXCEEDED,
            ),
            f"{max_associations} associations at once",
        )
    return None


#: The smallest maximum PDU length of a peer we can send to: one PDV header and one byte.
MIN_PEER_MAX_PDU_LENGTH = 7


def _window(rq_value: int, ours: int) -> int:
    """Combine two window sizes where 0 means unlimited."""
    if rq_value == 0:
        return ours
    if ours == 0:
        return rq_value
    return min(rq_value, ours)


def request_from_pdu(
    rq: A_ASSOCIATE_RQ, peer_host: str = "", peer_port: int = 0
) -> AssociationRequest:
    """Build the service-facing ``AssociationRequest`` from a received A-ASSOCIATE-RQ."""
    info = rq.user_information
    roles = {r.sop_class_uid: r for r in info.role_selections}
    contexts: list[PresentationContext] = []
    for item in rq.presentation_contexts:
        # A transfer syntax that is not a UID (bytes outside "0-9." decode to U+FFFD) can be
        # neither matched nor echoed in the A-ASSOCIATE-AC: the handler never sees it.
        syntaxes = [ts for ts in item.transfer_syntaxes if is_valid_uid(ts)]
        pc = PresentationContext(item.context_id, item.abstract_syntax, syntaxes)
        role = roles.get(item.abstract_syntax)
        if role is not None:
            pc.proposed_scu_role = role.scu_role
            pc.proposed_scp_role = role.scp_role
        contexts.append(pc)
    window = info.async_ops_window
    return AssociationRequest(
        called_ae_title=rq.called_ae_title,
        calling_ae_title=rq.calling_ae_title,
        presentation_contexts=contexts,
        peer_host=peer_host,
        peer_port=peer_port,
        max_pdu_length=info.maximum_length or 0,
        implementation_class_uid=info.implementation_class_uid,
        implementation_version_name=info.implementation_version_name,
        async_ops_invoked=window.invoked if window else 1,
        async_ops_performed=window.performed if window else 1,
        user_identity=info.user_identity_rq,
        extended_negotiation={
            e.sop_class_uid: e.application_information for e in info.extended_negotiations
        },
        common_extended_negotiation=info.common_extended_negotiations,
    )


def build_accept(
    rq: A_ASSOCIATE_RQ,
    request: AssociationRequest,
    our_max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
) -> tuple[A_ASSOCIATE_AC, Negotiated]:
    """Build the A-ASSOCIATE-AC from the service's decisions (PS3.8 §9.3.3, PS3.7 D.3.3).

    A context the service left undecided is rejected as "abstract syntax not supported".
    """
    ac_items: list[PresentationContextACItem] = []
    sub_items: list[SubItem] = [
        MaximumLength(our_max_pdu_length),
        ImplementationClassUID(IMPLEMENTATION_CLASS_UID),
    ]
    roles_out: list[RoleSelection] = []
    negotiated: dict[int, NegotiatedContext] = {}
    role_answered: set[str] = set()
    for pc in request.presentation_contexts:
        if pc.result is None:
            pc.result = PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
        accepted = pc.result == PresentationContextResult.ACCEPTANCE and pc.transfer_syntax
        # PS3.8 §9.3.3.2: the transfer syntax sub-item is present, its value not significant
        # unless accepted.
        ac_items.append(
            PresentationContextACItem(
                pc.context_id,
                int(pc.result),
                pc.transfer_syntax if accepted and pc.transfer_syntax else "",
            )
        )
        if not accepted or pc.transfer_syntax is None:
            continue
        # Default roles (PS3.7 D.3.3.4): requestor is SCU, acceptor (we) SCP. With a role
        # selection proposal the answer decides.
        our_scp, our_scu = True, False
        if pc.proposed_scu_role is not None:
            if pc.scu_role is None and pc.scp_role is None:
                pc.accept_roles()
            rq_scu = bool(pc.scu_role) and bool(pc.proposed_scu_role)
            rq_scp = bool(pc.scp_role) and bool(pc.proposed_scp_role)
            our_scp, our_scu = rq_scu, rq_scp
            if pc.abstract_syntax not in role_answered:
                role_answered.add(pc.abstract_syntax)
                roles_out.append(RoleSelection(pc.abstract_syntax, rq_scu, rq_scp))
        negotiated[pc.context_id] = NegotiatedContext(
            pc.context_id,
            pc.abstract_syntax,
            pc.transfer_syntax,
            scu_role=our_scu,
            scp_role=our_scp,
        )
    invoked = _window(request.async_ops_performed, 1)
    performed = _window(request.async_ops_invoked, request.max_operations_performed)
    if rq.user_information.async_ops_window is not None:
        # Only answer the window when one was proposed. Both fields keep the requestor's point
        # of view, as in the request (PS3.7 D.3.3.3): what it may invoke (= what we perform)
        # and what it may perform (= what we invoke).
        sub_items.append(AsynchronousOperationsWindow(performed, invoked))
    sub_items.extend(roles_out)
    sub_items.append(ImplementationVersionName(IMPLEMENTATION_VERSION_NAME))
    for sop_class, info in request.extended_negotiation_response.items():
        sub_items.append(SOPClassExtendedNegotiation(sop_class, info))
    identity = request.user_identity
    if (
        identity is not None
        and identity.positive_response_requested
        and request.user_identity_response is not None
    ):
        sub_items.append(UserIdentityAC(request.user_identity_response))
    ac = A_ASSOCIATE_AC(
        called_ae_title=rq.called_ae_title,
        calling_ae_title=rq.calling_ae_title,
        presentation_contexts=ac_items,
        user_information=UserInformation(sub_items),
        application_context=rq.application_context,
    )
    result = Negotiated(
        contexts=negotiated,
        peer_max_pdu_length=request.max_pdu_length,
        our_max_pdu_length=our_max_pdu_length,
        max_operations_invoked=invoked,
        max_operations_performed=performed,
        peer_implementation_class_uid=request.implementation_class_uid,
        peer_implementation_version_name=request.implementation_version_name,
        user_identity_response=request.user_identity_response,
        extended_negotiation=dict(request.extended_negotiation_response),
    )
    return ac, result


def build_reject(decision: AssociationDecision) -> A_ASSOCIATE_RJ:
    return A_ASSOCIATE_RJ(decision.result, decision.source, decision.reason)


# --- requestor ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ProposedContext:
    """A presentation context the requestor proposes, with optional role selection."""

    abstract_syntax: str
    transfer_syntaxes: Sequence[str]
    scu_role: bool | None = None
    scp_role: bool | None = None


def build_request(
    called_ae_title: str,
    calling_ae_title: str,
    contexts: Sequence[ProposedContext],
    *,
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
    async_ops: tuple[int, int] | None = None,
    user_identity: UserIdentityRQ | None = None,
    extended_negotiation: dict[str, bytes] | None = None,
    common_extended_negotiation: Sequence[SOPClassCommonExtendedNegotiation] = (),
) -> A_ASSOCIATE_RQ:
    """Build an A-ASSOCIATE-RQ (PS3.8 §9.3.2). Context IDs are 1, 3, 5, ... in order."""
    if not contexts:
        raise NegotiationError("an association needs at least one presentation context")
    if len(contexts) > 128:
        raise NegotiationError(
            f"{len(contexts)} presentation contexts proposed; one association holds at most 128"
        )
    items = [
        PresentationContextRQItem(2 * i + 1, c.abstract_syntax, list(c.transfer_syntaxes))
        for i, c in enumerate(contexts)
    ]
    sub_items: list[SubItem] = [
        MaximumLength(max_pdu_length),
        ImplementationClassUID(IMPLEMENTATION_CLASS_UID),
    ]
    if async_ops is not None:
        sub_items.append(AsynchronousOperationsWindow(*async_ops))
    seen: set[str] = set()
    for c in contexts:
        if (c.scu_role is not None or c.scp_role is not None) and c.abstract_syntax not in seen:
            seen.add(c.abstract_syntax)
            sub_items.append(RoleSelection(c.abstract_syntax, bool(c.scu_role), bool(c.scp_role)))
    sub_items.append(ImplementationVersionName(IMPLEMENTATION_VERSION_NAME))
    for sop_class, info in (extended_negotiation or {}).items():
        sub_items.append(SOPClassExtendedNegotiation(sop_class, info))
    sub_items.extend(common_extended_negotiation)
    if user_identity is not None:
        sub_items.append(user_identity)
    return A_ASSOCIATE_RQ(
        called_ae_title=called_ae_title,
        calling_ae_title=calling_ae_title,
        presentation_contexts=items,
        user_information=UserInformation(sub_items),
    )


def read_accept(rq: A_ASSOCIATE_RQ, ac: A_ASSOCIATE_AC) -> Negotiated:
    """Read an A-ASSOCIATE-AC against our request: the accepted contexts with their roles."""
    proposed = {item.context_id: item for item in rq.presentation_contexts}
    rq_roles = {r.sop_class_uid: r for r in rq.user_information.role_selections}
    ac_roles = {r.sop_class_uid: r for r in ac.user_information.role_selections}
    contexts: dict[int, NegotiatedContext] = {}
    for item in ac.presentation_contexts:
        if item.result != PresentationContextResult.ACCEPTANCE:
            continue
        asked = proposed.get(item.context_id)
        if asked is None:
            raise NegotiationError(
                f"A-ASSOCIATE-AC accepts presentation context {item.context_id}, "
                "which was not proposed"
            )
        if item.transfer_syntax not in asked.transfer_syntaxes:
            raise NegotiationError(
                f"A-ASSOCIATE-AC accepts context {item.context_id} with transfer syntax "
                f"{item.transfer_syntax!r}, which was not proposed for it"
            )
        # Default roles: we (requestor) are SCU only. A role selection answer overrides.
        scu, scp = True, False
        if asked.abstract_syntax in rq_roles:
            answer = ac_roles.get(asked.abstract_syntax)
            if answer is not None:
                wanted = rq_roles[asked.abstract_syntax]
                scu = wanted.scu_role and answer.scu_role
                scp = wanted.scp_role and answer.scp_role
        contexts[item.context_id] = NegotiatedContext(
            item.context_id, asked.abstract_syntax, item.transfer_syntax, scu_role=scu, scp_role=scp
        )
    info = ac.user_information
    if info.maximum_length is not None and 0 < info.maximum_length < MIN_PEER_MAX_PDU_LENGTH:
        raise NegotiationError(
            f"the acceptor's maximum PDU length {info.maximum_length} leaves no room for data"
        )
    window = info.async_ops_window
    asked_window = rq.user_information.async_ops_window
    invoked, performed = 1, 1
    if window is not None and asked_window is not None:
        # The acceptor's "performed" bounds how many we may invoke, and vice versa.
        # The answer is from our (the requestor's) point of view, never above what we asked.
        invoked = _window(asked_window.invoked, window.invoked)
        performed = _window(asked_window.performed, window.performed)
    identity = info.user_identity_ac
    return Negotiated(
        contexts=contexts,
        peer_max_pdu_length=info.maximum_length or 0,
        our_max_pdu_length=rq.user_information.maximum_length or 0,
        max_operations_invoked=invoked,
        max_operations_performed=performed,
        peer_implementation_class_uid=info.implementation_class_uid,
        peer_implementation_version_name=info.implementation_version_name,
        user_identity_response=identity.server_response if identity else None,
        extended_negotiation={
            e.sop_class_uid: e.application_information for e in info.extended_negotiations
        },
    )


#: PS3.8 §9.3.2.2: presentation context IDs are the odd numbers 1-255, so 128 per association.
MAX_PRESENTATION_CONTEXTS = 128

_LITTLE_ENDIAN_UNCOMPRESSED = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
)  # Explicit, Implicit VR LE


def storage_context(
    sop_class_uid: str, transfer_syntax: str, *, reencodable: bool | None = None
) -> ProposedContext:
    """The context to send one (SOP class, transfer syntax): the syntax itself, then the
    uncompressed little endian syntaxes when the data can be re-encoded into them (by default:
    any syntax whose pixel data is not encapsulated, big endian and deflated included)."""
    if reencodable is None:
        reencodable = not UID(transfer_syntax).is_compressed
    syntaxes = [transfer_syntax]
    if reencodable:
        syntaxes += [ts for ts in _LITTLE_ENDIAN_UNCOMPRESSED if ts != transfer_syntax]
    return ProposedContext(sop_class_uid, syntaxes)


def contexts_for(
    pairs: Iterable[tuple[str, str]], limit: int = MAX_PRESENTATION_CONTEXTS
) -> list[list[ProposedContext]]:
    """Group (SOP class, transfer syntax) pairs into associations of at most ``limit``
    presentation contexts, one context per distinct pair, in first-seen order. Every caller
    that proposes storage contexts (SCU, C-MOVE/C-GET sub-operations, the CLI) uses this."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    groups: list[list[ProposedContext]] = [[]]
    for sop_class, ts in dict.fromkeys(pairs):
        if len(groups[-1]) == limit:
            groups.append([])
        groups[-1].append(storage_context(sop_class, ts))
    return groups if groups[0] else []
