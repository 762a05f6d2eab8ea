"""Modality Worklist SCP: C-FIND on the Modality Worklist Information Model - FIND
(1.2.840.10008.5.1.4.31, PS3.4 K.6) answered from the archive's ``WorklistStore``.

Rules: an identifier that cannot be decoded is 0xC000 (Unable to process); none, or a key that
cannot be matched (a sequence key with several items, a value that does not parse) is 0xA900
(Identifier does not match SOP class) with an Error Comment saying why (PS3.4 K.4.1.1.4). Each
match is a pending response 0xFF00 (every key of the identifier is matched, so never 0xFF01)
holding exactly the requested attributes, with one Scheduled Procedure Step per response (K.6.1.2.2);
C-CANCEL stops between matches (0xFE00). The store is read on a worker thread, a batch of matches
per hop, so a query over 100,000 items never blocks the event loop. A C-FIND on another model goes
on to the next class of the service (``chain.pass_on_find``): this mixin composes with
``ArchiveService``'s Query/Retrieve.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator

from pydicom import Dataset

from dicomnet.archive.matching import QueryError
from dicomnet.archive.worklist import MODALITY_WORKLIST_FIND, WorklistStore
from dicomnet.dimse.status import FindStatus
from dicomnet.service import CFindProvider, ReceivedCFind, Response, Service
from dicomnet.services.chain import pass_on_find

log = logging.getLogger("dicomnet.services.worklist")

_BATCH = 64  # matches read per worker-thread hop


def _take(matches: Iterator[Dataset], n: int) -> list[Dataset]:
    return list(itertools.islice(matches, n))


class WorklistSCP(Service, CFindProvider):
    """Answers Modality Worklist C-FINDs from ``worklist`` (a ``WorklistStore`` shared by every
    association, on the archive's index file); other C-FINDs go on along the MRO."""

    worklist: WorklistStore | None = None

    async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset | Response]:
        if request.sop_class_uid != MODALITY_WORKLIST_FIND:
            async for answer in pass_on_find(self, WorklistSCP, request):
                yield answer
            return
        async for answer in self.find_worklist(request):
            yield answer

    async def find_worklist(self, request: ReceivedCFind) -> AsyncIterator[Dataset | Response]:
        """The Modality Worklist C-FIND (PS3.4 K.6.1.2)."""
        peer = request.association
        store = self.worklist
        if store is None:
            log.warning("[%s] worklist C-FIND: this node keeps no worklist", peer)
            yield Response(FindStatus.UNABLE_TO_PROCESS, error_comment="no worklist here")
            return
        try:
            identifier = request.dataset
        except Exception as exc:
            log.warning("[%s] worklist C-FIND: identifier unreadable: %s", peer, exc)
            yield Response(
                FindStatus.UNABLE_TO_PROCESS, error_comment=f"identifier unreadable: {exc}"
            )
            return
        if identifier is None:
            log.warning("[%s] worklist C-FIND without an identifier", peer)
            yield Response(
                FindStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment="no identifier"
            )
            return
        try:
            # The identifier is compiled (and rejected) inside the generator's first step.
            matches = store.find(identifier)
            first = await asyncio.to_thread(_take, matches, 1)
        except QueryError as exc:
            log.warning("[%s] worklist C-FIND refused: %s", peer, exc)
            yield Response(FindStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment=str(exc))
            return
        found = 0
        chunk = first
        while chunk and not request.cancelled.is_set():
            for match in chunk:
                if request.cancelled.is_set():
                    break
                found += 1
                yield Response(FindStatus.PENDING, dataset=match)
            if request.cancelled.is_set():
                break
            chunk = await asyncio.to_thread(_take, matches, _BATCH)
        log.info(
            "[%s] worklist C-FIND: %d item%s%s",
            peer,
            found,
            "" if found == 1 else "s",
            " (cancelled)" if request.cancelled.is_set() else "",
        )


__all__ = ["WorklistSCP"]
