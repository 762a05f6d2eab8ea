"""dicomnet.retrieve: C-MOVE/C-GET progress from the sub-operation counts (PS3.7 §9.1.3.1,
§9.1.4.1), failure statuses as exceptions (PS3.4 §C.4), and the responses iterator driven by
plain ``start``/``cancel`` callables instead of a client. No network."""

from __future__ import annotations

import asyncio

import pytest
from pydicom import Dataset

from dicomnet.dimse import commands as c
from dicomnet.dimse.status import Status, StatusCategory
from dicomnet.errors import AssociationAborted, DicomTimeoutError
from dicomnet.requests import CFindRequest, CMoveRequest, QueryRequest
from dicomnet.retrieve import (
    CFindError,
    CMoveError,
    QueryRetrieveResponses,
    RetrieveProgress,
    find_match,
    progress,
)
from dicomnet.uids import STUDY_ROOT_FIND, STUDY_ROOT_MOVE


def _move_rsp(status: int, remaining: int | None, completed: int, failed: int = 0) -> c.CMoveRSP:
    return c.CMoveRSP(
        message_id_being_responded_to=1,
        status=status,
        number_of_remaining_suboperations=remaining,
        number_of_completed_suboperations=completed,
        number_of_failed_suboperations=failed,
        number_of_warning_suboperations=0,
    )


def _match(patient_id: str) -> Dataset:
    ds = Dataset()
    ds.PatientID = patient_id
    return ds


# -- progress and errors ----------------------------------------------------------------------------


def test_progress_counts_and_failed_instances() -> None:
    pending = RetrieveProgress.from_response(_move_rsp(Status.PENDING, 3, 1), None)
    assert (pending.remaining, pending.completed, pending.done, pending.final) == (3, 1, 1, False)
    failed_list = Dataset()
    failed_list.FailedSOPInstanceUIDList = ["1.2.3", "1.2.4"]
    # 0xB000: sub-operations complete, one or more failures (PS3.4 §C.4.2.1.5).
    final = RetrieveProgress.from_response(_move_rsp(0xB000, None, 2, 2), failed_list)
    assert final.final and final.category is StatusCategory.WARNING
    assert final.failed_instances == ("1.2.3", "1.2.4") and final.done == 4


def test_a_warning_is_progress_and_a_failure_raises_with_the_progress() -> None:
    convert = progress(CMoveError)
    assert convert(_move_rsp(0xB000, None, 1, 1), None).final
    rsp = _move_rsp(Status.MOVE_DESTINATION_UNKNOWN, None, 0)
    rsp.error_comment = "who is NOWHERE?"
    with pytest.raises(CMoveError, match=r"C-MOVE failed.*who is NOWHERE") as info:
        convert(rsp, None)
    assert info.value.status == 0xA801
    assert info.value.progress is not None and info.value.progress.final


def test_find_matches_and_failures() -> None:
    match = _match("P1")
    pending = c.CFindRSP(message_id_being_responded_to=1, status=Status.PENDING)
    assert find_match(pending, match) is match
    assert find_match(c.CFindRSP(message_id_being_responded_to=1, status=0), None) is None
    failure = c.CFindRSP(
        message_id_being_responded_to=1,
        status=Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        error_comment="bad key",
        offending_elements=[0x00100010],
    )
    with pytest.raises(CFindError, match=r"bad key \(offending elements \(0010,0010\)\)") as info:
        find_match(failure, None)
    assert info.value.offending_elements == [0x00100010]


# -- the responses iterator -------------------------------------------------------------------------


_Item = tuple[c.ResponseMessage, Dataset | None] | BaseException


class _Peer:
    """Stands in for the client: ``start`` queues the scripted responses, ``cancel`` counts."""

    def __init__(self, request: QueryRequest, script: list[_Item]) -> None:
        self.request = request
        self.script = script
        self.started = 0
        self.cancels = 0

    async def start(self) -> None:
        self.started += 1
        self.request.results = asyncio.Queue()
        for item in self.script:
            self.request.results.put_nowait(item)

    async def cancel(self) -> None:
        self.cancels += 1


def _find_responses(
    script: list[_Item], timeout: float | None = 5
) -> tuple[QueryRetrieveResponses[Dataset], _Peer]:
    request = CFindRequest(model=STUDY_ROOT_FIND, message_id=9)
    peer = _Peer(request, script)
    responses = QueryRetrieveResponses(
        request, find_match, start=peer.start, cancel=peer.cancel, timeout=timeout
    )
    return responses, peer


async def test_iteration_sends_once_and_yields_each_match() -> None:
    pending = c.CFindRSP(message_id_being_responded_to=9, status=Status.PENDING)
    final = c.CFindRSP(message_id_being_responded_to=9, status=Status.SUCCESS)
    responses, peer = _find_responses(
        [(pending, _match("P1")), (pending, _match("P2")), (final, None)]
    )
    assert peer.started == 0  # nothing is sent before iteration starts
    assert [m.PatientID async for m in responses] == ["P1", "P2"]
    assert peer.started == 1 and responses.final_status == Status.SUCCESS
    assert responses.message_id == 9
    await responses.cancel()  # finished: no C-CANCEL
    assert peer.cancels == 0


async def test_aclose_cancels_once_and_drains_to_the_final_response() -> None:
    request = CMoveRequest(model=STUDY_ROOT_MOVE, destination="DEST")
    peer = _Peer(
        request,
        [
            (_move_rsp(Status.PENDING, 2, 1), None),
            (_move_rsp(Status.PENDING, 1, 2), None),
            (_move_rsp(Status.CANCEL, 1, 2), None),
        ],
    )
    async with QueryRetrieveResponses(
        request, progress(CMoveError), start=peer.start, cancel=peer.cancel, timeout=5
    ) as responses:
        first = await anext(responses)
        assert first.remaining == 2
        await responses.cancel()
        await responses.cancel()
    assert peer.cancels == 1 and responses.cancel_sent
    assert responses.final_status == Status.CANCEL
    assert request.results is not None and request.results.empty()


async def test_aclose_before_start_sends_nothing() -> None:
    responses, peer = _find_responses([])
    await responses.aclose()
    assert (peer.started, peer.cancels) == (0, 0)
    assert [m async for m in responses] == []


async def test_no_response_within_the_timeout_raises() -> None:
    responses, _ = _find_responses([], timeout=0.01)
    with pytest.raises(DicomTimeoutError, match="no response to message 9"):
        await anext(responses)


async def test_an_association_that_ends_raises_from_the_iterator() -> None:
    pending = c.CFindRSP(message_id_being_responded_to=9, status=Status.PENDING)
    responses, _ = _find_responses([(pending, _match("P1")), AssociationAborted("gone")])
    assert (await anext(responses)).PatientID == "P1"
    with pytest.raises(AssociationAborted, match="gone"):
        await anext(responses)
    with pytest.raises(StopAsyncIteration):
        await anext(responses)
