"""What a ``DicomServer`` asks of a node's security policy at each step of an association, and
the log line and audit record of every refusal: ``ServerSecurity`` (one per server) and
``RequestGuard`` (one per accepted association).

Rules: the steps, in the order the server takes them.

1. A connection: ``admit(host)`` counts it against the per-address limit
   (``limits.AssociationLimiter``). On a TLS port that happens before the handshake
   (``TLSListener(on_connect=...)``) and a refused connection is closed at once: nothing but a
   handshake could be said to it, and a handshake is what a flood would cost us. On a plain
   port the refusal waits for the A-ASSOCIATE-RQ and answers it A-ASSOCIATE-RJ rejected-
   transient, "local limit exceeded" (PS3.8 Table 9-21).
2. The TLS handshake (``TLSListener``): a failure is audited as a node authentication failure.
3. The A-ASSOCIATE-RQ, once the provider's own checks passed: ``authorize`` decides the user
   identity (``users.decide_identity``; scrypt runs in a worker thread) and then whether the
   peer may associate (``permissions.check_association``: calling AE title, address,
   certificate subject, user). A refusal is the A-ASSOCIATE-RJ the decision names.
4. The service's ``on_association_request``; then ``restrict_contexts`` rejects, with
   "user-rejection" (PS3.8 Table 9-18), the presentation contexts of services the peer may not
   use, so that it learns before it sends anything.
5. Accepted: one audit record (Login), then each request passes the association's
   ``RequestGuard``: a service the peer may not use is refused 0x0124 "not authorized", a
   C-MOVE destination it may not name 0xA801. A C-STORE is checked when its command arrives,
   before a byte of its data set is written (not authorized 0x0124; free disk below the minimum
   0xA700): the association then discards its data set. Its size is checked as it streams
   (``FileSink.max_size``): past the limit it is refused 0xA700 and the partial file removed.
   Stores, queries and retrieves are audited when answered.
6. The end: ``ended`` gives back what ``admit`` counted, and audits the Logout of an
   association that was accepted.

Every refusal made here is one WARNING line on ``dicomnet.security`` and one audit record (the
C-STORE refusals are logged by the association that discards the data set, and audited here).
Nothing here sends a PDU: the server does, with the answers returned.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomnet.dimse.commands import CFindRQ, CGetRQ, CMoveRQ, CStoreRQ, Message, RequestMessage
from dicomnet.dimse.status import Status
from dicomnet.pdu import A_ASSOCIATE_RJ, PresentationContextResult, reject_description
from dicomnet.security.audit import Auditor, Party
from dicomnet.security.decisions import Decision, RejectAnswer, RequestRefused, printable
from dicomnet.security.limits import AssociationLimiter, check_free_space
from dicomnet.security.permissions import (
    Peer,
    Permissions,
    ServiceName,
    service_for_command,
)
from dicomnet.security.tls import TLSHandshakeError
from dicomnet.security.users import (
    IdentityDecision,
    PasswordHash,
    TokenValidator,
    decide_identity,
)
from dicomnet.uids import is_storage

if TYPE_CHECKING:
    from dicomnet.association import Incoming
    from dicomnet.negotiation import AssociationRequest
    from dicomnet.service import AssociationInfo, ReceivedCStore, ReceivedQueryRetrieve
    from dicomnet.sinks import DatasetSink

log = logging.getLogger("dicomnet.security")

_ADMITTED = Decision.allow("no per-address limit")

#: A C-STORE handler (``Service.on_c_store``): sync or async, returns a status or a Response.
StoreHandler = Callable[["ReceivedCStore"], Any]
#: How the association makes the sink of a message's data set (``Association.sink_factory``).
SinkFactory = Callable[[Message, Any], "DatasetSink"]


def party(info: AssociationInfo, username: str | None = None) -> Party:
    """The peer of an association as the audit trail names it."""
    certificate = info.peer_certificate
    return Party(
        info.calling_ae_title,
        info.peer_host,
        username if username is not None else info.username,
        certificate.subject if certificate is not None else None,
    )


def _status_of(result: Any) -> int:
    """The status of a handler's answer (an int, a ``Response``, or None for success)."""
    if result is None:
        return int(Status.SUCCESS)
    status = getattr(result, "status", result)
    return int(status)


@dataclass
class ServerSecurity:
    """A node's security policy, as a ``DicomServer`` applies it (``DicomServer(security=)``).

    ``users``/``require_user``/``accept_username_only``/``validators``: the user identity
    decision (``users.decide_identity``); ``permissions``: who may do what (None: everyone
    everything); ``limiter``: associations per address (the total is ``ServerLimits``');
    ``auditor``: where the records go (None: only log lines); ``min_free_disk``: bytes that must
    stay free on the file system of ``storage`` for a C-STORE to be received;
    ``max_instance_size``: the largest data set a C-STORE may bring."""

    users: Mapping[str, PasswordHash] = field(default_factory=dict)
    require_user: bool = False
    accept_username_only: bool = False
    validators: Mapping[int, TokenValidator] = field(default_factory=dict)
    permissions: Permissions | None = None
    limiter: AssociationLimiter | None = None
    auditor: Auditor | None = None
    storage: Path | None = None
    min_free_disk: int | None = None
    max_instance_size: int | None = None
    # TLS connections admitted before their handshake, by (host, port), until they reach the
    # association layer (``connected``) or end in the listener (``tls_dropped``).
    _tls_admitted: set[tuple[str, int]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.min_free_disk is not None and self.storage is None:
            raise ValueError("min_free_disk needs the storage folder whose free space it is")
        for name in ("min_free_disk", "max_instance_size"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} cannot be negative: {value}")

    @property
    def checks_identities(self) -> bool:
        """Whether user identities are decided at all (users, token validators or required)."""
        return bool(self.users) or bool(self.validators) or self.require_user

    # -- 1. connections ---------------------------------------------------------------------------

    def admit(self, host: str) -> Decision:
        """Count a connection from ``host``; a refusal is not counted."""
        return self.limiter.acquire(host) if self.limiter is not None else _ADMITTED

    def connected(self, host: str, port: int) -> Decision:
        """A connection reached the association layer: admitted before its TLS handshake, or
        admitted now (a plain port). Whatever is allowed here is given back by ``ended``."""
        if (host, port) in self._tls_admitted:
            self._tls_admitted.discard((host, port))
            return _ADMITTED if self.limiter is None else Decision.allow("admitted before TLS")
        return self.admit(host)

    def tls_connect(self, host: str, port: int) -> bool:
        """``TLSListener(on_connect=)``: admit before the handshake, or close at once."""
        decision = self.admit(host)
        if not decision.allowed:
            reason = f"{decision.reason}; connection closed before the TLS handshake"
            log.warning("refusing a connection from %s:%d: %s", host, port, reason)
            self._audit_refusal(Party("", host), reason, None, "connection closed")
            return False
        if self.limiter is not None:
            self._tls_admitted.add((host, port))
        return True

    def tls_failure(self, failure: TLSHandshakeError) -> None:
        """``TLSListener(on_failure=)``: a peer that did not authenticate (logged there)."""
        if self.auditor is not None:
            self.auditor.node_authentication_failure(failure.peer[0], failure.reason)

    def tls_dropped(self, host: str, port: int) -> None:
        """``TLSListener(on_dropped=)``: an admitted connection ended before the association."""
        if (host, port) in self._tls_admitted:
            self._tls_admitted.discard((host, port))
            self.release(host)

    def unidentified(self, host: str, reason: str) -> None:
        """A connection that ended without an association request because we aborted it (it
        sent something else, e.g. a TLS ClientHello on the plain port): audited like a node
        that failed to authenticate (the connection layer logged what it sent)."""
        if self.auditor is not None:
            self.auditor.node_authentication_failure(host, reason)

    def release(self, host: str) -> None:
        if self.limiter is not None:
            self.limiter.release(host)

    def tls_callbacks(self) -> dict[str, Any]:
        """The keyword arguments of ``TLSListener`` that apply this policy."""
        return {
            "on_connect": self.tls_connect,
            "on_failure": self.tls_failure,
            "on_dropped": self.tls_dropped,
        }

    # -- 3. the association request ---------------------------------------------------------------

    def _decide(self, request: AssociationRequest) -> IdentityDecision:
        return decide_identity(
            request.user_identity,
            self.users,
            require=self.require_user,
            accept_username_only=self.accept_username_only,
            validators=self.validators,
        )

    async def authorize(
        self, info: AssociationInfo, request: AssociationRequest
    ) -> RejectAnswer | None:
        """The user identity, then the permission to associate: None to go on to the service,
        or the A-ASSOCIATE-RJ to answer (logged and audited here). A verified user is set as
        ``info.username``, and the positive response on ``request`` when it was asked for."""
        if self.checks_identities:
            if request.user_identity is not None:
                decision = await asyncio.to_thread(self._decide, request)  # scrypt: ~50 ms
            else:
                decision = self._decide(request)
            if not decision.accepted:
                assert decision.reject is not None
                log.warning(
                    "[%s] association rejected (%s): authentication failed: %s",
                    info,
                    decision.reject.describe(),
                    decision.reason,
                )
                if self.auditor is not None:
                    self.auditor.authentication_failure(
                        party(info, decision.username), decision.reason, association=info.id
                    )
                return decision.reject
            if decision.verified:
                info.username = decision.username
                request.user_identity_response = decision.response
                log.info("[%s] %s", info, decision.reason)
        if self.permissions is not None:
            certificate = info.peer_certificate
            allowed = self.permissions.check_association(
                Peer(
                    info.calling_ae_title,
                    info.peer_host,
                    certificate.subject if certificate is not None else None,
                    info.username,
                )
            )
            if not allowed.allowed:
                assert allowed.reject is not None
                self.refuse(info, allowed.reason, allowed.reject)
                return allowed.reject
        return None

    def refuse(self, info: AssociationInfo, reason: str, answer: RejectAnswer) -> None:
        """Log and audit an association refused by this policy (limits, permissions)."""
        log.warning("[%s] association rejected (%s): %s", info, answer.describe(), reason)
        self._audit_refusal(party(info), reason, info.id, answer.describe())

    def rejected(self, info: AssociationInfo, reason: str, rj: A_ASSOCIATE_RJ) -> None:
        """Audit an association rejected elsewhere (the provider's checks, the service): the
        server has logged it."""
        self._audit_refusal(
            party(info), reason, info.id, reject_description(rj.result, rj.source, rj.reason)
        )

    # -- 4. presentation contexts -----------------------------------------------------------------

    def restrict_contexts(self, info: AssociationInfo, request: AssociationRequest) -> None:
        """Reject ("user-rejection") each context the service accepted for a service the peer
        may not use. A storage context that the peer proposed to take the SCP role on stays
        for C-GET when the peer may use C-GET, with that role only."""
        permissions = self.permissions
        if permissions is None:
            return
        ae = info.calling_ae_title
        refused: list[str] = []
        for pc in request.presentation_contexts:
            if not pc.accepted:
                continue
            decision = permissions.check_context(ae, pc.abstract_syntax)
            if decision.allowed:
                continue
            if (
                pc.proposed_scp_role
                and is_storage(pc.abstract_syntax)
                and permissions.check_service(ae, ServiceName.GET).allowed
            ):
                pc.accept_roles(scu_role=False, scp_role=True)  # it receives, it never stores
                continue
            pc.reject(PresentationContextResult.USER_REJECTION)
            refused.append(decision.reason)
        if refused:
            reasons = sorted(set(refused))
            reason = (
                f"{len(refused)} presentation context(s) rejected: {'; '.join(reasons[:5])}"
                + ("; ..." if len(reasons) > 5 else "")
            )
            log.warning("[%s] %s", info, reason)
            self._audit_refusal(party(info), reason, info.id, "presentation context user-rejection")

    # -- 5. the accepted association --------------------------------------------------------------

    def accepted(self, info: AssociationInfo) -> None:
        """Audit the Login of an accepted association."""
        if self.auditor is not None:
            tls = info.tls
            detail: dict[str, Any] = {"tls": f"{tls.version} {tls.cipher}"} if tls else {}
            self.auditor.association(party(info), association=info.id, detail=detail)

    def guard(self, info: AssociationInfo) -> RequestGuard | None:
        """The request checks of an accepted association; None when there is nothing to check
        or record (no permissions, limits or audit trail): no cost per request then."""
        if (
            self.permissions is None
            and self.auditor is None
            and self.min_free_disk is None
            and self.max_instance_size is None
        ):
            return None
        return RequestGuard(self, info)

    # -- 6. the end ---------------------------------------------------------------------------

    def ended(self, info: AssociationInfo, admission: Decision | None, accepted: bool) -> None:
        """The association (or the connection) ended: give back what ``connected`` counted and
        audit the Logout of an accepted association."""
        if admission is not None and admission.allowed and self.limiter is not None:
            self.release(info.peer_host)
        if accepted and self.auditor is not None:
            self.auditor.association(party(info), association=info.id, released=True)

    # -- helpers --------------------------------------------------------------------------------

    def _audit_refusal(
        self, who: Party, reason: str, association: int | None, answer: str | None
    ) -> None:
        if self.auditor is not None:
            self.auditor.refusal(who, reason, association=association, answer=answer)

    def close(self) -> None:
        if self.auditor is not None:
            self.auditor.close()


class RequestGuard:
    """The checks and records of one accepted association's requests; the dispatcher
    (``RequestDispatcher(guard=)``) and the association's sink factory call it."""

    def __init__(self, security: ServerSecurity, info: AssociationInfo) -> None:
        self.security = security
        self.info = info

    def _refused(self, decision: Decision) -> tuple[int, str]:
        assert decision.status is not None
        log.warning(
            "[%s] request refused (0x%04X): %s", self.info, decision.status, decision.reason
        )
        self.security._audit_refusal(
            party(self.info), decision.reason, self.info.id, f"status 0x{decision.status:04X}"
        )
        return decision.status, decision.reason

    def _permission(self, message: RequestMessage) -> Decision | None:
        permissions = self.security.permissions
        if permissions is None:
            return None
        ae = self.info.calling_ae_title
        decision = permissions.check_service(ae, service_for_command(message.COMMAND_FIELD))
        if decision.allowed and isinstance(message, CMoveRQ):
            decision = permissions.check_move_destination(ae, message.move_destination)
        return None if decision.allowed else decision

    def refuse(self, message: RequestMessage) -> tuple[int, str] | None:
        """(status, reason) of a request the peer may not make (logged and audited), or None.
        A C-STORE is not checked here: ``sink_factory`` did, when its command arrived."""
        if isinstance(message, CStoreRQ):
            return None
        decision = self._permission(message)
        return None if decision is None else self._refused(decision)

    def sink_factory(self, make: SinkFactory) -> SinkFactory:
        """``make`` with the C-STORE checks in front: refused (``RequestRefused``, so the
        association discards the data set) when the peer may not store or the disk is too full;
        else the file sink, with the instance size limit."""
        security = self.security
        if (
            security.permissions is None
            and security.min_free_disk is None
            and security.max_instance_size is None
        ):
            return make

        def factory(message: Message, context: Any) -> DatasetSink:
            if isinstance(message, CStoreRQ):
                refused = self._permission(message)
                if refused is None and security.min_free_disk is not None:
                    assert security.storage is not None
                    space = check_free_space(security.storage, security.min_free_disk)
                    refused = None if space.allowed else space
                if refused is not None:
                    assert refused.status is not None
                    raise RequestRefused(refused.reason, refused.status)
                sink = make(message, context)
                if security.max_instance_size is not None:
                    sink.max_size = security.max_instance_size  # type: ignore[attr-defined]
                return sink
            return make(message, context)

        return factory

    def store_handler(self, item: Incoming, handler: StoreHandler | None) -> StoreHandler | None:
        """Audit a C-STORE refused while it arrived; else ``handler`` wrapped so that what it
        answers is audited (with the study and patient read before it runs: it may move the
        file)."""
        error = item.error
        if isinstance(error, RequestRefused):
            self.security._audit_refusal(
                party(self.info), error.reason, self.info.id, f"status 0x{error.status:04X}"
            )
            return handler
        if handler is None or self.security.auditor is None:
            return handler
        return partial(self._audited_store, handler)

    async def _audited_store(self, handler: StoreHandler, request: ReceivedCStore) -> Any:
        try:
            keys = request.attributes("StudyInstanceUID", "PatientID", "PatientName")
        except Exception:  # an unreadable data set: the handler will say so
            keys = {}
        status = int(Status.PROCESSING_FAILURE)
        try:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
            status = _status_of(result)
            return result
        except OSError:
            status = int(Status.OUT_OF_RESOURCES)
            raise
        finally:
            auditor = self.security.auditor
            assert auditor is not None
            auditor.store(
                party(self.info),
                study_uid=keys.get("StudyInstanceUID", ""),
                sop_class_uid=request.sop_class_uid,
                sop_instance_uid=request.sop_instance_uid,
                patient_id=keys.get("PatientID") or None,
                patient_name=keys.get("PatientName") or None,
                status=status,
                association=self.info.id,
            )

    def answered(
        self,
        request: ReceivedQueryRetrieve,
        status: int,
        values: Mapping[str, Any],
        results: int,
    ) -> None:
        """Audit a C-FIND (Query) or C-MOVE/C-GET (Instances Transferred) once its final
        response is sent; ``results``: the pending responses before it."""
        auditor = self.security.auditor
        if auditor is None:
            return
        message = request.message
        try:
            identifier = request.dataset
        except Exception:
            identifier = None
        peer = party(self.info)
        if isinstance(message, CFindRQ):
            auditor.query(
                peer,
                sop_class_uid=message.affected_sop_class_uid,
                identifier=identifier,
                status=status,
                matches=results,
                association=self.info.id,
            )
            return
        studies: list[str] = []
        patient_id = patient_name = None
        if identifier is not None:
            value = identifier.get("StudyInstanceUID")
            if value:
                studies = [str(v) for v in value] if not isinstance(value, str) else [value]
            patient_id = str(identifier.get("PatientID") or "") or None
            patient_name = str(identifier.get("PatientName") or "") or None
        assert isinstance(message, CMoveRQ | CGetRQ)
        move = isinstance(message, CMoveRQ)
        auditor.retrieve(
            peer,
            operation="move" if move else "get",
            destination=(
                Party(printable(message.move_destination.strip()))
                if isinstance(message, CMoveRQ)
                else peer
            ),
            study_uids=studies,
            patient_id=patient_id,
            patient_name=patient_name,
            completed=int(values.get("number_of_completed_suboperations") or 0),
            failed=int(values.get("number_of_failed_suboperations") or 0),
            warning=int(values.get("number_of_warning_suboperations") or 0),
            status=status,
            association=self.info.id,
        )


__all__ = ["RequestGuard", "ServerSecurity", "party"]
