"""Requests the accepting side sends to the requestor on an open association: the server-initiated
DIMSE-N requests of PS3.7 §10.1, above all the N-EVENT-REPORT that the SCP of a SOP class sends
to the SCU that asked for something (a storage commitment report on the association of its
N-ACTION, PS3.4 J.3.3.1.2).

Rules: one ``PeerRequests`` per association, made by the server's association runner, which hands
it every response the peer sends (``answered``: True when the response was ours) and tells it
when the association ends (``ended``). Message IDs come from the association's allocator, shared
with the C-STORE sub-operations of C-GET, and never one that either of them still waits on
(``in_use``, PS3.7 §9.1.1.1). A request is sent on a context where the negotiated roles let us
send it (an N-EVENT-REPORT: ours as the SCP, the default of an acceptor, PS3.7 §D.3.3.4), waits
for its response for ``timeout`` seconds (``DicomTimeoutError``), and fails with
``AssociationAborted`` when the association ends first. A failure status is a result
(``NResult``), not an exception, as in ``DicomClient.n_request``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container, Mapping
from typing import Any

from pydicom import Dataset

from dicomnet.association import Association, Incoming
from dicomnet.dataset import decode_dataset
from dicomnet.dimse.commands import ResponseMessage
from dicomnet.dimse.ids import MessageIds
from dicomnet.errors import AssociationAborted, DicomTimeoutError
from dicomnet.requests import NEventReportRequest, NResult, NServiceRequest
from dicomnet.sinks import FileSink, MemorySink

log = logging.getLogger("dicomnet.peer")


class _Either(Container[int]):
    """The message IDs outstanding in either of two tables."""

    __slots__ = ("_a", "_b")

    def __init__(self, a: Container[int], b: Container[int]) -> None:
        self._a, self._b = a, b

    def __contains__(self, item: object) -> bool:
        return item in self._a or item in self._b


class PeerRequests:
    """Server-initiated requests on one association (``Service.peer``)."""

    def __init__(
        self,
        assoc: Association,
        message_ids: MessageIds,
        others: Mapping[int, Any] | None = None,
        *,
        timeout: float | None = 30.0,
    ) -> None:
        self.assoc = assoc
        self.message_ids = message_ids
        self.timeout = timeout
        self._pending: dict[int, tuple[NServiceRequest, asyncio.Future[None]]] = {}
        #: Message IDs outstanding here or in ``others`` (the C-GET sub-operations).
        self.in_use: Container[int] = _Either(self._pending, others or {})
        self._ended = False

    @property
    def is_open(self) -> bool:
        """Established and not being released or aborted: a request sent now can be answered."""
        assoc = self.assoc
        return (
            not self._ended
            and assoc.negotiated is not None
            and not assoc.closed.done()
            and assoc.conn.established
        )

    async def send(self, request: NServiceRequest) -> NResult:
        """Send an N request to the peer and wait for its response (``request.result``)."""
        assoc = self.assoc
        negotiated = assoc.negotiated
        if not self.is_open or negotiated is None:
            raise AssociationAborted("the association is not open for a request to the peer")
        request.message_id = self.message_ids.allocate(self.in_use)
        # NegotiationError when the peer accepted no context we may send this on.
        ctx, message, data = request.outgoing(negotiated)
        future: asyncio.Future[None] = assoc.loop.create_future()
        self._pending[request.message_id] = (request, future)
        try:
            await assoc.send_message(ctx.context_id, message, data)
            try:
                await asyncio.wait_for(asyncio.shield(future), self.timeout)
            except TimeoutError:
                raise DicomTimeoutError(
                    f"no {request.OPERATION}-RSP from {assoc.info.calling_ae_title or 'the peer'} "
                    f"within {self.timeout} s"
                ) from None
        finally:
            self._pending.pop(request.message_id, None)
        result = request.result
        assert result is not None
        return result

    async def n_event_report(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type_id: int,
        information: Dataset | None = None,
    ) -> NResult:
        """N-EVENT-REPORT (PS3.7 §10.1.1) of event ``event_type_id`` with its Event Information,
        sent as the SCP of ``sop_class_uid``; the Event Reply is ``NResult.dataset``."""
        return await self.send(
            NEventReportRequest(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                event_type_id=event_type_id,
                dataset=information,
            )
        )

    # -- from the association runner ------------------------------------------------------------

    def answered(self, item: Incoming) -> bool:
        """A response from the peer: complete the request it answers; False when it answers
        none of ours (the runner's other tables may know it)."""
        message = item.message
        if not isinstance(message, ResponseMessage):
            return False
        entry = self._pending.get(message.message_id_being_responded_to)
        if entry is None:
            return False
        request, future = entry
        sink = item.sink
        dataset = None
        if isinstance(sink, MemorySink) and sink.value is not None:
            try:
                dataset = decode_dataset(sink.value, item.context.transfer_syntax)
            except Exception as exc:
                log.warning(
                    "[%s] cannot decode the data set of %s: %s", self.assoc.info, message.NAME, exc
                )
        elif isinstance(sink, FileSink):
            sink.discard()
        request.response = message
        request.response_dataset = dataset
        if not future.done():
            future.set_result(None)
        return True

    def ended(self) -> None:
        """The association ended: every request still waiting fails."""
        self._ended = True
        for _request, future in self._pending.values():
            if not future.done():
                future.set_exception(AssociationAborted("the association ended"))
                future.exception()


__all__ = ["PeerRequests"]
