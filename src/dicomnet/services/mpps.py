"""Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET of the MPPS SOP class
(1.2.840.10008.3.1.2.3.3), kept in the archive's ``MppsStore``.

Rules: the state rules are the store's (``archive.mpps``): N-CREATE must say IN PROGRESS (0x0106
otherwise), an existing instance is 0x0111; N-SET of an unknown instance is 0x0112, of a
COMPLETED or DISCONTINUED one 0x0110 with the Error Comment and Error ID of PS3.4 Table F.7.2-2.
An N-CREATE without an Attribute List is 0x0120 (Missing attribute); one without an instance UID
gets one from us, returned as the response's Affected SOP Instance UID (PS3.7 §10.1.5.1.2). Every
change and every refusal is logged with the instance and the calling AE. The store is written on
a worker thread. N requests for other SOP classes go on along the MRO (``chain.pass_on``).
"""

from __future__ import annotations

import asyncio
import logging

from pydicom.uid import generate_uid

from dicomnet.archive.mpps import MODALITY_PERFORMED_PROCEDURE_STEP, MppsResult, MppsStore
from dicomnet.dimse.status import Status
from dicomnet.service import (
    HandlerResult,
    NCreateProvider,
    NSetProvider,
    ReceivedN,
    Response,
    Service,
)
from dicomnet.services.chain import pass_on

log = logging.getLogger("dicomnet.services.mpps")


class MppsSCP(Service, NCreateProvider, NSetProvider):
    """Keeps the MPPS instances modalities create and update in ``mpps`` (an ``MppsStore``
    shared by every association, on the archive's index file)."""

    mpps: MppsStore | None = None

    async def on_n_create(self, request: ReceivedN) -> HandlerResult:
        if request.sop_class_uid != MODALITY_PERFORMED_PROCEDURE_STEP:
            return await pass_on(self, MppsSCP, "on_n_create", request)
        peer = request.association
        store = self.mpps
        if store is None:
            return Response(Status.PROCESSING_FAILURE, error_comment="no MPPS store here")
        try:
            attributes = request.dataset
        except Exception as exc:
            log.warning("[%s] MPPS N-CREATE: attribute list unreadable: %s", peer, exc)
            return Response(Status.PROCESSING_FAILURE, error_comment=f"unreadable: {exc}")
        if attributes is None:
            log.warning("[%s] MPPS N-CREATE without an attribute list", peer)
            return Response(Status.MISSING_ATTRIBUTE, error_comment="no Attribute List")
        uid = request.sop_instance_uid
        assigned = uid is None
        uid = uid or generate_uid()
        result = await asyncio.to_thread(store.create, uid, attributes, peer.calling_ae_title)
        self._log("N-CREATE", request, uid, result)
        extra = {"affected_sop_instance_uid": uid} if assigned and result.ok else {}
        return Response(
            result.status, error_comment=result.comment, error_id=result.error_id, extra=extra
        )

    async def on_n_set(self, request: ReceivedN) -> HandlerResult:
        if request.sop_class_uid != MODALITY_PERFORMED_PROCEDURE_STEP:
            return await pass_on(self, MppsSCP, "on_n_set", request)
        peer = request.association
        store = self.mpps
        if store is None:
            return Response(Status.PROCESSING_FAILURE, error_comment="no MPPS store here")
        uid = request.sop_instance_uid or ""
        try:
            modification = request.dataset
        except Exception as exc:
            log.warning("[%s] MPPS N-SET %s: modification list unreadable: %s", peer, uid, exc)
            return Response(Status.PROCESSING_FAILURE, error_comment=f"unreadable: {exc}")
        if modification is None:
            log.warning("[%s] MPPS N-SET %s without a modification list", peer, uid)
            return Response(Status.MISSING_ATTRIBUTE_VALUE, error_comment="no Modification List")
        result = await asyncio.to_thread(store.set, uid, modification)
        self._log("N-SET", request, uid, result)
        return Response(result.status, error_comment=result.comment, error_id=result.error_id)

    def _log(self, operation: str, request: ReceivedN, uid: str, result: MppsResult) -> None:
        peer = request.association
        if result.ok:
            state = result.dataset.get("PerformedProcedureStepStatus", "") if result.dataset else ""
            log.info("[%s] MPPS %s %s: %s", peer, operation, uid, state)
        else:
            log.warning(
                "[%s] MPPS %s %s refused: 0x%04X %s",
                peer,
                operation,
                uid,
                result.status,
                result.comment or "",
            )


__all__ = ["MppsSCP"]
