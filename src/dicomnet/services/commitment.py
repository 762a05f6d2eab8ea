"""Storage Commitment Push Model SCP (PS3.4 J.3): the N-ACTION that asks the archive to commit
to a list of instances, and the N-EVENT-REPORT that answers it.

Rules:

- The N-ACTION (Action Type 1 on the well-known instance 1.2.840.10008.1.20.1.1) is checked
  first: another instance is 0x0112, another action 0x0123, Action Information that is missing,
  malformed or has an empty Referenced SOP Sequence is 0x0115 (``archive.commitment``); each
  refusal is logged. An accepted request has its report computed against the index and the files
  (``check_references``, a chunk of UIDs per index query) and persisted (``PendingReports``)
  before the N-ACTION-RSP says Success: from then on the report is never lost, whatever happens
  to the association or the server.
- The report goes out after the N-ACTION-RSP (``ReceivedN.responded``): on the requester's own
  association if it is still open (we are its SCP there, the default role), else on a new
  association to the requester's AE title at the address the peers table gives it (``--peer``),
  proposing the SCP role for us with SCP/SCU Role Selection (PS3.4 J.3.3.1.3, PS3.7 §D.3.3.4).
  Any answer of the requester ends the delivery (a failure status is logged); no answer (a
  refused or failed association, a timeout, an unknown AE) is retried with exponential backoff
  by ``CommitmentDelivery.run``, which ``dicomnet serve`` runs in the background, also for the
  reports a previous run left pending.
- A repeated Transaction UID is not computed twice: its pending report goes out once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomnet.archive.commitment import (
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    CommitmentReport,
    CommitmentRequestError,
    Lookup,
    PendingReports,
    check_references,
    encode_report,
    parse_request,
    parse_request_bytes,
    report_dataset,
)
from dicomnet.client import DicomClient
from dicomnet.dataset import encode_dataset
from dicomnet.dimse.status import Status
from dicomnet.errors import DicomNetError
from dicomnet.negotiation import Negotiated
from dicomnet.requests import NEventReportRequest, NResult, Outgoing, accepted_context
from dicomnet.service import HandlerResult, NActionProvider, PeerLink, ReceivedN, Response, Service
from dicomnet.services.chain import pass_on

log = logging.getLogger("dicomnet.services.commitment")

#: Action Type ID of a storage commitment request (PS3.4 Table J.3-1).
REQUEST_STORAGE_COMMITMENT = 1


@dataclass(eq=False)
class CommitmentReportRequest(NEventReportRequest):
    """The N-EVENT-REPORT-RQ of a storage commitment report (PS3.4 Table J.3-2), its data set
    encoded without pydicom in the little endian syntaxes (``encode_report``)."""

    report: CommitmentReport | None = None

    def outgoing(self, negotiated: Negotiated) -> Outgoing:
        assert self.report is not None
        syntax = self.abstract_syntax or self.sop_class_uid
        ctx = negotiated.find_context(syntax, scp=True) or accepted_context(negotiated, syntax)
        data = encode_report(self.report, ctx.transfer_syntax)
        if data is None:
            data = encode_dataset(report_dataset(self.report), ctx.transfer_syntax)
        return ctx, self._command(True), data


def report_request(report: CommitmentReport) -> CommitmentReportRequest:
    """The N-EVENT-REPORT request carrying ``report`` (event type 1 or 2, PS3.4 J.3.3.1)."""
    return CommitmentReportRequest(
        sop_class_uid=STORAGE_COMMITMENT_PUSH,
        sop_instance_uid=STORAGE_COMMITMENT_PUSH_INSTANCE,
        event_type_id=report.event_type_id,
        report=report,
    )


class CommitmentDelivery:
    """A server process's storage commitment reports: computes and persists each (``prepare``),
    sends it (``send_later``, ``deliver``) and retries what could not be sent (``run``)."""

    def __init__(
        self,
        pending: PendingReports,
        lookup: Lookup,
        storage_root: str | os.PathLike[str],
        *,
        peers: Mapping[str, tuple[str, int]] | None = None,
        ae_title: str = "DICOMNET",
        flush: Callable[[], Awaitable[bool]] | None = None,
        timeout: float = 30.0,
        lease: float = 60.0,
        poll: float = 5.0,
    ) -> None:
        self.pending = pending
        self.lookup = lookup
        self.root = Path(storage_root)
        self.peers = dict(peers or {})
        self.ae_title = ae_title
        #: Waits until the rows of the instances stored so far are in the index.
        self.flush = flush
        #: Seconds to connect, associate, and wait for the N-EVENT-REPORT-RSP.
        self.timeout = timeout
        #: How long an attempt holds its report before the retry loop may take it again.
        self.lease = lease
        #: The retry loop looks for due reports at least this often (other processes add some).
        self.poll = poll
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    # -- one request ---------------------------------------------------------------------------

    async def prepare(
        self, transaction_uid: str, references: Sequence[tuple[str, str]], requester_ae: str
    ) -> CommitmentReport | None:
        """Check ``references`` and persist the report for ``requester_ae``; None when the
        Transaction UID is pending already (its report goes out once)."""
        if self.flush is not None:
            await self.flush()
        return await asyncio.to_thread(self._prepare, transaction_uid, references, requester_ae)

    def _prepare(
        self, transaction_uid: str, references: Sequence[tuple[str, str]], requester_ae: str
    ) -> CommitmentReport | None:
        success: list[tuple[str, str]] = []
        failure: list[tuple[str, str, int]] = []
        for sop_class, sop_instance, reason in check_references(references, self.lookup, self.root):
            if reason is None:
                success.append((sop_class, sop_instance))
            else:
                failure.append((sop_class, sop_instance, reason))
        report = CommitmentReport(transaction_uid, success, failure)
        if not self.pending.add(requester_ae, report, hold=self.lease):
            return None
        return report

    def send_later(
        self,
        transaction_uid: str,
        requester_ae: str,
        responded: asyncio.Event,
        peer: PeerLink | None,
    ) -> None:
        """Deliver the report once the N-ACTION-RSP is out (``responded``), preferably on
        ``peer`` (the requester's association)."""

        async def first_attempt() -> None:
            await responded.wait()
            await self.deliver(transaction_uid, requester_ae, peer)

        self._spawn(first_attempt())

    async def deliver(
        self, transaction_uid: str, requester_ae: str, peer: PeerLink | None = None
    ) -> bool:
        """One delivery attempt of a pending report: on ``peer`` while it is open, else on a
        new association to ``requester_ae``. True when the requester answered (the report is
        done with); False when it is scheduled again."""
        got = await asyncio.to_thread(self.pending.get, transaction_uid)
        if got is None:
            return True  # delivered meanwhile
        report = got[1]
        problems: list[str] = []
        if peer is not None and peer.is_open:
            try:
                result = await peer.send(report_request(report))
            except (DicomNetError, OSError) as exc:
                problems.append(f"on its association: {exc}")
            else:
                return await self._answered(report, requester_ae, result, "on its association")
        address = self.peers.get(requester_ae)
        if address is None:
            problems.append(
                f"no address for AE {requester_ae!r} (give one with --peer {requester_ae}=HOST:PORT)"
            )
        else:
            host, port = address
            try:
                async with DicomClient(
                    host,
                    port,
                    self.ae_title,
                    requester_ae,
                    connect_timeout=self.timeout,
                    acse_timeout=self.timeout,
                    dimse_timeout=self.timeout,
                ) as client:
                    result = await client.n_request(report_request(report))
            except (DicomNetError, OSError) as exc:
                problems.append(f"{host}:{port}: {exc}")
            else:
                where = f"on a new association to {host}:{port}"
                return await self._answered(report, requester_ae, result, where)
        delay = await asyncio.to_thread(self.pending.failed, transaction_uid, "; ".join(problems))
        attempts = await asyncio.to_thread(self.pending.attempts, transaction_uid)
        log.warning(
            "commitment report %s for %s not delivered (attempt %d: %s); next attempt in %g s",
            transaction_uid,
            requester_ae,
            attempts,
            "; ".join(problems),
            delay,
        )
        if self._wake is not None:
            self._wake.set()
        return False

    async def _answered(
        self, report: CommitmentReport, requester_ae: str, result: NResult, where: str
    ) -> bool:
        await asyncio.to_thread(self.pending.delivered, report.transaction_uid)
        if result.ok:
            log.info(
                "commitment report %s sent to %s %s: %d committed, %d failed",
                report.transaction_uid,
                requester_ae,
                where,
                len(report.success),
                len(report.failure),
            )
        else:
            log.warning(
                "commitment report %s sent to %s %s was answered 0x%04X %s (not sent again)",
                report.transaction_uid,
                requester_ae,
                where,
                result.status,
                result.error_comment or "",
            )
        return True

    # -- the retry loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver due reports (a previous run's too) until cancelled."""
        self._wake = wake = asyncio.Event()
        while True:
            for transaction_uid, requester_ae in await asyncio.to_thread(self.pending.due, 16):
                if await asyncio.to_thread(self.pending.claim, transaction_uid, self.lease):
                    await self.deliver(transaction_uid, requester_ae)
            next_due = await asyncio.to_thread(self.pending.next_due)
            delay = self.poll if next_due is None else next_due - time.time()
            wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(delay, self.poll))

    def start(self, *, retries: bool = True) -> None:
        """Start the retry loop (with ``retries``) on the running event loop."""
        if retries and self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop retrying; first attempts still running get ``timeout`` seconds. What is not
        delivered stays pending for the next start."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._tasks:
            _done, running = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=1)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _parse(request: ReceivedN) -> tuple[str, list[tuple[str, str]]]:
    parsed = parse_request_bytes(request.raw, request.transfer_syntax)
    if parsed is not None:
        return parsed
    try:
        ds = request.dataset
    except Exception as exc:
        raise CommitmentRequestError(
            f"the Action Information cannot be decoded: {exc}", Status.INVALID_ARGUMENT_VALUE
        ) from None
    return parse_request(ds)


class CommitmentSCP(Service, NActionProvider):
    """The Storage Commitment Push Model SCP; ``commitments`` (a ``CommitmentDelivery``) is
    shared by every association of the server."""

    commitments: CommitmentDelivery | None = None

    async def on_n_action(self, request: ReceivedN) -> HandlerResult:
        if request.sop_class_uid != STORAGE_COMMITMENT_PUSH:
            return await pass_on(self, CommitmentSCP, "on_n_action", request)
        peer = request.association
        delivery = self.commitments
        if delivery is None:
            return Response(Status.PROCESSING_FAILURE, error_comment="no storage commitment here")
        if request.sop_instance_uid != STORAGE_COMMITMENT_PUSH_INSTANCE:
            log.warning(
                "[%s] commitment N-ACTION on instance %s, not the well-known %s",
                peer,
                request.sop_instance_uid,
                STORAGE_COMMITMENT_PUSH_INSTANCE,
            )
            return Response(
                Status.NO_SUCH_SOP_INSTANCE,
                error_comment=f"the instance is {STORAGE_COMMITMENT_PUSH_INSTANCE} (PS3.4 J.3.5)",
            )
        if request.action_type_id != REQUEST_STORAGE_COMMITMENT:
            log.warning("[%s] commitment N-ACTION type %s", peer, request.action_type_id)
            return Response(
                Status.NO_SUCH_ACTION,
                error_comment="Action Type ID 1 (Request Storage Commitment) only",
            )
        try:
            transaction, references = await asyncio.to_thread(_parse, request)
        except CommitmentRequestError as exc:
            log.warning("[%s] commitment request refused: 0x%04X %s", peer, exc.status, exc)
            return Response(exc.status, error_comment=str(exc))
        requester = peer.calling_ae_title
        started = time.perf_counter()
        report = await delivery.prepare(transaction, references, requester)
        count = len(references)
        del references  # what is kept now is the report, in the index
        if report is None:
            log.warning(
                "[%s] commitment request %s: that Transaction UID is pending already; its "
                "report goes out once",
                peer,
                transaction,
            )
        else:
            log.info(
                "[%s] commitment request %s: %d reference%s, %d committed, %d failed "
                "(checked in %.2f s)",
                peer,
                transaction,
                count,
                "" if count == 1 else "s",
                len(report.success),
                len(report.failure),
                time.perf_counter() - started,
            )
            delivery.send_later(transaction, requester, request.responded, self.peer)
        return Status.SUCCESS


__all__ = [
    "REQUEST_STORAGE_COMMITMENT",
    "CommitmentDelivery",
    "CommitmentReportRequest",
    "CommitmentSCP",
    "report_request",
]
