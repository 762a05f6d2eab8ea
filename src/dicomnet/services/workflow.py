"""The archive node with the workflow services a modality uses besides storage: Modality Worklist
(``services.worklist``), MPPS (``services.mpps``) and Storage Commitment Push Model
(``services.commitment``) on top of ``ArchiveService`` (storage, Query/Retrieve, the index).

Rules: one ``WorkflowService`` class per server, configured by ``factory``: the worklist, the
MPPS instances and the pending commitment reports live in the index's SQLite file, so they are
there after a restart and ``dicomnet worklist``/``dicomnet mpps list`` read and write them while
the server runs. The default ``on_association_request`` accepts their SOP classes beside the
Query/Retrieve ones. ``start_workflow``/``stop_workflow`` run and stop the commitment retry
loop with the server (``dicomnet serve`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicomnet.archive.commitment import STORAGE_COMMITMENT_PUSH, PendingReports
from dicomnet.archive.index import SQLiteIndex
from dicomnet.archive.mpps import MODALITY_PERFORMED_PROCEDURE_STEP, MppsStore
from dicomnet.archive.worklist import MODALITY_WORKLIST_FIND, WorklistStore
from dicomnet.services.commitment import CommitmentDelivery, CommitmentSCP
from dicomnet.services.mpps import MppsSCP
from dicomnet.services.qr import QR_SOP_CLASSES, ArchiveService
from dicomnet.services.worklist import WorklistSCP

log = logging.getLogger("dicomnet.services.workflow")

#: The SOP classes the workflow services add to the archive's.
WORKFLOW_SOP_CLASSES: tuple[str, ...] = (
    MODALITY_WORKLIST_FIND,
    MODALITY_PERFORMED_PROCEDURE_STEP,
    STORAGE_COMMITMENT_PUSH,
)


class WorkflowService(WorklistSCP, MppsSCP, CommitmentSCP, ArchiveService):
    """Storage, Query/Retrieve, Modality Worklist, MPPS and Storage Commitment in one service.
    Configure with ``WorkflowService.factory(root, index=open_index(root), peers=..., aet=...)``."""

    abstract_syntaxes = (*QR_SOP_CLASSES, *WORKFLOW_SOP_CLASSES)

    @classmethod
    def factory(  # type: ignore[override]
        cls,
        root: str | Path,
        *,
        index: SQLiteIndex,
        peers: Mapping[str, tuple[str, int]] | None = None,
        aet: str | None = None,
        commitment_retry: tuple[float, float] = (5.0, 600.0),
        **storage: Any,
    ) -> type[WorkflowService]:
        """``ArchiveService.factory``'s configuration plus the workflow stores, opened on the
        index's file; ``peers`` also gives the address of a commitment requester that gets its
        report on a new association, and ``commitment_retry`` the first and the longest delay
        between attempts to deliver one."""
        first, longest = commitment_retry
        pending = PendingReports(index.path, first_retry=first, max_retry=longest)
        delivery = CommitmentDelivery(
            pending, index.locate, root, peers=peers, ae_title=aet or "DICOMNET"
        )
        configured = super().factory(
            root,
            index=index,
            peers=peers,
            aet=aet,
            worklist=WorklistStore(index.path),
            mpps=MppsStore(index.path),
            commitments=delivery,
            **storage,
        )
        assert issubclass(configured, WorkflowService)
        writer = configured.index_writer
        if writer is not None:
            delivery.flush = writer.aflush  # a report sees the instances stored before it
        return configured


def start_workflow(factory: type[Any], *, retries: bool = True) -> None:
    """Start what the workflow services of a configured service class run in the background
    (the commitment retry loop, with ``retries``); nothing for another service class."""
    delivery = getattr(factory, "commitments", None)
    if isinstance(delivery, CommitmentDelivery):
        delivery.start(retries=retries)


async def stop_workflow(factory: type[Any]) -> None:
    """Stop what ``start_workflow`` started and close the workflow stores."""
    delivery = getattr(factory, "commitments", None)
    if isinstance(delivery, CommitmentDelivery):
        await delivery.stop()
        delivery.pending.close()
    for name in ("worklist", "mpps"):
        store = getattr(factory, name, None)
        if isinstance(store, WorklistStore | MppsStore):
            store.close()


__all__ = ["WORKFLOW_SOP_CLASSES", "WorkflowService", "start_workflow", "stop_workflow"]
