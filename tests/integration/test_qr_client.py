"""The query/retrieve client (PS3.4 §C.4) over loopback against small in-test services: C-FIND
matches, C-MOVE/C-GET progress, failure statuses as exceptions, C-CANCEL by ``cancel()`` and
``aclose()``. The identifiers built from keyword/tag mappings are tested without a network in
tests/unit/test_query.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.client import (
    QR_MODELS,
    CFindError,
    CGetError,
    CMoveError,
    RetrieveProgress,
)
from dicomnet.errors import AssociationAborted
from dicomnet.negotiation import AssociationDecision, AssociationRequest
from dicomnet.service import (
    ReceivedCFind,
    ReceivedCGet,
    ReceivedCMove,
    ReceivedCStore,
    Response,
    Service,
)
from tests.helpers import write_ct

ALL_MODELS = tuple(uid for uids in QR_MODELS.values() for uid in uids)

STUDIES = [
    {
        "PatientName": "SMITH^JOHN",
        "PatientID": "P1",
        "StudyInstanceUID": "1.2.1",
        "StudyDate": "20240105",
    },
    {
        "PatientName": "SMITHERS^A",
        "PatientID": "P2",
        "StudyInstanceUID": "1.2.2",
        "StudyDate": "20231231",
    },
    {
        "PatientName": "JONES^BOB",
        "PatientID": "P3",
        "StudyInstanceUID": "1.2.3",
        "StudyDate": "20240301",
    },
]


def _matches(study: dict[str, str], query: Dataset) -> bool:
    name = str(query.get("PatientName", "") or "")
    if name and not study["PatientName"].startswith(name.rstrip("*")):
        return False
    date = str(query.get("StudyDate", "") or "")
    if date.endswith("-"):
        return study["StudyDate"] >= date[:-1]
    return True


class FindSCP(Service):
    """C-FIND over STUDIES, with a prefix wildcard and an open date range; records what it got."""

    abstract_syntaxes = ALL_MODELS
    seen: list[tuple[str, Dataset, int]] = []

    async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset | Response]:
        query = request.dataset
        assert query is not None
        self.seen.append((request.context.abstract_syntax, query, request.message.priority))  # type: ignore[union-attr]
        if query.get("QueryRetrieveLevel") not in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
            yield Response(0xA900, error_comment="no or bad QueryRetrieveLevel")
            return
        for study in STUDIES:
            if _matches(study, query):
                ds = Dataset()
                ds.QueryRetrieveLevel = query.QueryRetrieveLevel
                for key in query:
                    if key.keyword in study:
                        setattr(ds, key.keyword, study[key.keyword])
                yield ds


class SlowFindSCP(Service):
    """Yields up to 500 matches, each after waiting (bounded) for a cancel."""

    abstract_syntaxes = ALL_MODELS
    cancelled: list[int] = []

    async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset]:
        query = request.dataset
        if query is not None and query.get("StudyInstanceUID"):  # a single-value key: one match
            yield query
            return
        for i in range(500):
            if request.cancelled.is_set():
                self.cancelled.append(request.message_id)
                return
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = f"1.2.{i}"
            yield ds
            try:
                await asyncio.wait_for(request.cancelled.wait(), 0.2)
            except TimeoutError:
                pass


def _counts(remaining: int | None, completed: int, failed: int) -> dict[str, int | None]:
    return {
        "number_of_remaining_suboperations": remaining,
        "number_of_completed_suboperations": completed,
        "number_of_failed_suboperations": failed,
        "number_of_warning_suboperations": 0,
    }


class MoveSCP(Service):
    """C-MOVE to "KNOWN" pretends to send 3 instances, the last failing; others get 0xA801."""

    abstract_syntaxes = ALL_MODELS
    destinations: list[str] = []

    async def on_c_move(self, request: ReceivedCMove) -> AsyncIterator[Response]:
        destination = request.message.move_destination  # type: ignore[union-attr]
        self.destinations.append(destination)
        if destination != "KNOWN":
            yield Response(Status.MOVE_DESTINATION_UNKNOWN, error_comment=f"who is {destination}?")
            return
        for i in range(2):
            yield Response(Status.PENDING, extra=_counts(2 - i, i + 1, 0))
        failed = Dataset()
        failed.FailedSOPInstanceUIDList = ["1.2.3.4.5"]
        yield Response(0xB000, dataset=failed, extra=_counts(None, 2, 1))


class GetSCP(Service):
    """C-GET sends back the files in ``files`` on the association; records the proposed roles."""

    abstract_syntaxes = ALL_MODELS
    files: list[Path] = []
    roles: list[tuple[str, bool | None, bool | None]] = []

    async def on_association_request(self, request: AssociationRequest) -> AssociationDecision:
        for pc in request.presentation_contexts:
            if pc.abstract_syntax == CTImageStorage:
                self.roles.append((pc.abstract_syntax, pc.proposed_scu_role, pc.proposed_scp_role))
        return await super().on_association_request(request)

    async def on_c_get(self, request: ReceivedCGet) -> AsyncIterator[Response]:
        query = request.dataset
        if query is None or "StudyInstanceUID" not in query:
            yield Response(0xC000, error_comment="StudyInstanceUID missing")
            return
        done = 0
        for i, path in enumerate(self.files):
            status = await request.store(path)
            done += status == Status.SUCCESS
            yield Response(Status.PENDING, extra=_counts(len(self.files) - i - 1, done, 0))
        yield Response(Status.SUCCESS, extra=_counts(None, done, len(self.files) - done))


# -- over loopback ---------------------------------------------------------------------------------


async def test_c_find_yields_matches_with_the_model_level_and_keys() -> None:
    FindSCP.seen = []
    async with DicomServer(FindSCP, port=0) as server:
        async with DicomClient("127.0.0.1", server.port, "FINDSCU", "QR") as client:
            smiths = [
                m
                async for m in client.c_find(
                    {"PatientName": "SMITH*", "StudyInstanceUID": None},
                    level="STUDY",
                    priority=1,
                )
            ]
            recent = [
                m
                async for m in client.c_find(
                    {"StudyDate": "20240101-", "PatientID": ""}, model="patient", level="STUDY"
                )
            ]
    assert [m.StudyInstanceUID for m in smiths] == ["1.2.1", "1.2.2"]
    assert all(m.QueryRetrieveLevel == "STUDY" for m in smiths)
    assert sorted(m.PatientID for m in recent) == ["P1", "P3"]
    (model1, query1, priority1), (model2, _query2, _) = FindSCP.seen
    assert model1 == "1.2.840.10008.5.1.4.1.2.2.1" and priority1 == 1
    assert model2 == "1.2.840.10008.5.1.4.1.2.1.1"
    assert query1.PatientName == "SMITH*" and query1.QueryRetrieveLevel == "STUDY"
    assert "StudyInstanceUID" in query1 and not query1.StudyInstanceUID


async def test_c_find_failure_raises_with_status_and_comment() -> None:
    bad = Dataset()
    bad.QueryRetrieveLevel = "FRAME"
    async with DicomServer(FindSCP, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            with pytest.raises(CFindError) as info:
                async for _m in client.c_find(bad):
                    pass
            # The association is still usable.
            assert [m async for m in client.c_find({"PatientName": "JONES*"})]
    assert info.value.status == 0xA900
    assert info.value.error_comment == "no or bad QueryRetrieveLevel"
    assert "0xA900" in str(info.value)


async def test_cancel_continues_to_the_final_cancel_status() -> None:
    SlowFindSCP.cancelled = []
    async with DicomServer(SlowFindSCP, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            matches = client.c_find({"StudyInstanceUID": None})
            got = []
            async for match in matches:
                got.append(match.StudyInstanceUID)
                if len(got) == 2:
                    await matches.cancel()
            assert matches.cancel_sent
            assert matches.final_status == Status.CANCEL
            assert len(got) <= 3
            after = [m async for m in client.c_find({"StudyInstanceUID": "1.2.0"})]
            assert [m.StudyInstanceUID for m in after] == ["1.2.0"]


async def test_aclose_cancels_and_drains() -> None:
    SlowFindSCP.cancelled = []
    async with DicomServer(SlowFindSCP, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            async with client.c_find({"StudyInstanceUID": None}) as matches:
                async for _match in matches:
                    break
            assert matches.cancel_sent and matches.final_status == Status.CANCEL
            # The next operation on the same association gets its own, complete answer.
            again = client.c_find({"StudyInstanceUID": None})
            first = await again.__anext__()
            await again.aclose()
            assert first.StudyInstanceUID == "1.2.0"
            assert again.final_status == Status.CANCEL


async def test_c_move_progress_and_warning_with_failed_instances() -> None:
    MoveSCP.destinations = []
    async with DicomServer(MoveSCP, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            progress = [
                p
                async for p in client.c_move(
                    {"StudyInstanceUID": "1.2.1"}, destination="KNOWN", level="STUDY"
                )
            ]
            with pytest.raises(CMoveError) as info:
                async for _p in client.c_move({"StudyInstanceUID": "1.2.1"}, "NOBODY"):
                    pass
    assert MoveSCP.destinations == ["KNOWN", "NOBODY"]
    assert [(p.remaining, p.completed, p.final) for p in progress] == [
        (2, 1, False),
        (1, 2, False),
        (None, 2, True),
    ]
    final = progress[-1]
    assert isinstance(final, RetrieveProgress)
    assert final.status == 0xB000 and final.failed == 1 and final.done == 3
    assert final.failed_instances == ("1.2.3.4.5",)
    assert info.value.status == 0xA801
    assert info.value.error_comment == "who is NOBODY?"
    assert info.value.progress is not None and info.value.progress.final


async def test_c_get_into_a_folder(tmp_path: Path) -> None:
    files = [tmp_path / "src" / f"{i}.dcm" for i in range(4)]
    sent = [write_ct(p, rows=32, columns=32, study_uid="1.2.9") for p in files]
    GetSCP.files, GetSCP.roles = files, []
    out = tmp_path / "out"
    async with DicomServer(GetSCP, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            progress = [p async for p in client.c_get({"StudyInstanceUID": "1.2.9"}, out_dir=out)]
            with pytest.raises(CGetError) as info:
                async for _p in client.c_get({"PatientID": "P1"}, out_dir=out):
                    pass
    assert GetSCP.roles and all(r == (CTImageStorage, False, True) for r in GetSCP.roles)
    assert [p.completed for p in progress] == [1, 2, 3, 4, 4]
    assert progress[-1].final and progress[-1].status == Status.SUCCESS
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{ds.SOPInstanceUID}.dcm" for ds in sent
    )
    for ds in sent:
        got = dcmread(out / f"{ds.SOPInstanceUID}.dcm")
        assert got.PixelData == ds.PixelData and got.StudyInstanceUID == "1.2.9"
        assert got.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert info.value.status == 0xC000


async def test_each_c_get_keeps_its_own_store_and_temp_folder(tmp_path: Path) -> None:
    """A C-GET's handler and temporary folder belong to that C-GET (found among the outstanding
    requests), not to the client: a later C-GET without ``temp_dir`` uses the client's."""
    files = [tmp_path / "src" / f"{i}.dcm" for i in range(2)]
    for p in files:
        write_ct(p, rows=8, columns=8, study_uid="1.2.9")
    GetSCP.files, GetSCP.roles = files, []
    seen: dict[str, list[Path]] = {"first": [], "second": []}

    def recorder(name: str) -> Callable[[object], Awaitable[int]]:
        async def store(request: object) -> int:
            assert isinstance(request, ReceivedCStore)
            seen[name].append(request.path)
            return Status.SUCCESS

        return store

    first_temp, client_temp = tmp_path / "first", tmp_path / "client"
    first_temp.mkdir()
    client_temp.mkdir()
    async with DicomServer(GetSCP, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            client.temp_dir = client_temp
            query = {"StudyInstanceUID": "1.2.9"}
            async for _ in client.c_get(query, recorder("first"), temp_dir=first_temp):
                pass
            async for _ in client.c_get(query, recorder("second")):
                pass
            assert client.temp_dir == client_temp
    assert len(seen["first"]) == len(seen["second"]) == 2
    # The temporary files are in the folder or a subfolder of it (sinks.TempFilePool).
    assert all(path.is_relative_to(first_temp) for path in seen["first"])
    assert all(path.is_relative_to(client_temp) for path in seen["second"])


async def test_c_get_needs_one_destination(tmp_path: Path) -> None:
    client = DicomClient("127.0.0.1", 1)

    async def store(_request: object) -> None:
        return None

    with pytest.raises(ValueError):
        client.c_get({}, store, out_dir=tmp_path)
    with pytest.raises(ValueError):
        client.c_get({})
    with pytest.raises(ValueError):
        client.c_move({}, destination="")


async def test_association_lost_mid_find_raises() -> None:
    async with DicomServer(SlowFindSCP, port=0) as server:
        client = DicomClient("127.0.0.1", server.port, dimse_timeout=20)
        matches = client.c_find({"StudyInstanceUID": None})
        first = await matches.__anext__()
        assert first.StudyInstanceUID == "1.2.0"
        assert client._assoc is not None
        client._assoc.abort()  # the connection goes away before the final response
        with pytest.raises(AssociationAborted):
            async for _m in matches:
                pass
        await client.abort()
