"""The archive node's query/retrieve SCP (PS3.4 Annex C) over loopback with dicomnet's own client:
the index written by C-STORE, C-FIND at every level of both models with the requested keys and
the character set, C-MOVE to another node and C-GET back on the association, with their counts,
statuses, C-CANCEL, and the faults (bad identifiers, unknown or refusing destinations, files gone
from disk)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.archive.index import InstanceRecord, SQLiteIndex
from dicomnet.client import CFindError, CMoveError, RetrieveProgress
from dicomnet.service import (
    DatasetRequest,
    ReceivedCFind,
    ReceivedCGet,
    ReceivedCMove,
    ReceivedCStore,
    Response,
)
from dicomnet.services.qr import ArchiveService
from dicomnet.services.storage import INDEX_NAME, StorageService, open_index
from tests.helpers import free_port, write_ct

STUDY_A = "1.2.826.0.1.3680043.10.1472.9.1"
STUDY_B = "1.2.826.0.1.3680043.10.1472.9.2"
SERIES_A1 = STUDY_A + ".1"
SERIES_A2 = STUDY_A + ".2"
SERIES_B1 = STUDY_B + ".1"


def _archive(root: Path) -> list[Dataset]:
    """Two patients: A (study A, two series of 2 and 1 instances), B (study B, one instance)."""
    made = []
    for i, (study, series, pid, name) in enumerate(
        [
            (STUDY_A, SERIES_A1, "PA", "SMITH^ANNA"),
            (STUDY_A, SERIES_A1, "PA", "SMITH^ANNA"),
            (STUDY_A, SERIES_A2, "PA", "SMITH^ANNA"),
            (STUDY_B, SERIES_B1, "PB", "JONES^BOB"),
        ]
    ):
        sop = f"{series}.{i + 1}"
        ds = write_ct(
            root / f"{sop}.dcm",
            rows=16,
            columns=16,
            study_uid=study,
            series_uid=series,
            sop_uid=sop,
            patient_id=pid,
            patient_name=name,
        )
        made.append(ds)
    return made


class Node:
    """An ArchiveService server on the loop of the test, with its index."""

    def __init__(self, root: Path, index: SQLiteIndex | None = None, **kwargs: Any) -> None:
        self.root = root
        self.index = index or open_index(root)
        self.requests: list[DatasetRequest] = []  # the requests, to watch for C-CANCEL
        requests = self.requests

        class Tracked(ArchiveService):
            def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset | Response]:
                requests.append(request)
                return super().on_c_find(request)

            def on_c_move(self, request: ReceivedCMove) -> AsyncIterator[Response]:
                requests.append(request)
                return super().on_c_move(request)

            def on_c_get(self, request: ReceivedCGet) -> AsyncIterator[Response]:
                requests.append(request)
                return super().on_c_get(request)

        self.factory = Tracked.factory(root, index=self.index, fsync=False, aet="ARCHIVE", **kwargs)
        self.server = DicomServer(self.factory, "127.0.0.1", 0)

    async def __aenter__(self) -> Node:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close(abort_after=5)
        assert self.factory.index_writer is not None
        self.factory.index_writer.close()
        self.index.close()

    async def cancel_seen(self) -> None:
        """Wait until the running C-FIND/C-MOVE/C-GET has received its C-CANCEL."""
        await asyncio.wait_for(self.requests[-1].cancelled.wait(), 10)

    def client(self, **kwargs: Any) -> DicomClient:
        return DicomClient("127.0.0.1", self.server.port, "SCU", "ARCHIVE", **kwargs)


@pytest.fixture
def archive_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "archive"
    _archive(root)
    yield root


# -- the index ------------------------------------------------------------------------------------


async def test_start_indexes_existing_files_and_store_adds_rows(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    _archive(root)
    (root / "notes.txt").write_text("not DICOM")
    async with Node(root) as node:
        # reconcile on open indexed the four files (the text file is skipped)
        assert len(list(node.index.records())) == 4
        new = write_ct(tmp_path / "new.dcm", patient_id="PC", patient_name="NEW^ONE")
        async with node.client() as client:
            assert await client.c_store(tmp_path / "new.dcm") == Status.SUCCESS
            matches = [m async for m in client.c_find({"PatientID": "PC"}, level="STUDY")]
        assert [m.StudyInstanceUID for m in matches] == [new.StudyInstanceUID]
        (record,) = [r for r in node.index.records() if r.patient_id == "PC"]
        assert (root / record.path).is_file()
        assert record.size == (root / record.path).stat().st_size
        assert record.sop_class_uid == new.SOPClassUID
        assert record.transfer_syntax_uid == "1.2.840.10008.1.2.1"
        assert record.patient_name == "NEW^ONE" and record.modality == "CT"
    assert (root / INDEX_NAME).is_file()


async def test_reconcile_drops_rows_of_deleted_files(archive_root: Path) -> None:
    index = open_index(archive_root)
    index.close()
    gone = next(archive_root.glob(f"{SERIES_B1}.*.dcm"))
    os.unlink(gone)
    async with Node(archive_root) as node:
        assert {r.patient_id for r in node.index.records()} == {"PA"}


async def test_non_ascii_names_indexed_and_returned_in_utf8(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    ds = write_ct(tmp_path / "in.dcm", patient_id="PJ", patient_name="x")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen=山田^太郎"
    ds.save_as(tmp_path / "in.dcm", enforce_file_format=True)
    async with Node(root) as node, node.client() as client:
        assert await client.c_store(tmp_path / "in.dcm") == Status.SUCCESS
        (match,) = [
            m
            async for m in client.c_find(
                {"PatientName": "müller*", "PatientID": None}, model="patient", level="PATIENT"
            )
        ]
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "Müller^Jürgen=山田^太郎"
    assert match.PatientID == "PJ"


# -- C-FIND ----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
async def test_find_at_every_level(archive_root: Path) -> None:
    async with Node(archive_root) as node, node.client() as client:
        patients = [
            m
            async for m in client.c_find(
                {"PatientID": None, "PatientName": "SMITH*", "NumberOfPatientRelatedStudies": None},
                model="patient",
                level="PATIENT",
            )
        ]
        studies = [
            m
            async for m in client.c_find(
                {
                    "StudyInstanceUID": None,
                    "StudyDate": "20240101-",
                    "PatientID": None,
                    "ModalitiesInStudy": None,
                    "NumberOfStudyRelatedInstances": None,
                    "RetrieveAETitle": None,
                },
                level="STUDY",
            )
        ]
        series = [
            m
            async for m in client.c_find(
                {"StudyInstanceUID": STUDY_A, "SeriesInstanceUID": None, "Modality": "C?"},
                level="SERIES",
            )
        ]
        images = [
            m
            async for m in client.c_find(
                {
                    "PatientID": "PA",
                    "StudyInstanceUID": STUDY_A,
                    "SeriesInstanceUID": SERIES_A1,
                    "SOPInstanceUID": None,
                    "InstanceNumber": None,
                },
                model="patient",
                level="IMAGE",
            )
        ]
        none = [m async for m in client.c_find({"StudyDate": "-20200101"}, level="STUDY")]
    assert [(p.PatientID, p.PatientName, p.NumberOfPatientRelatedStudies) for p in patients] == [
        ("PA", "SMITH^ANNA", 1)
    ]
    assert all(p.QueryRetrieveLevel == "PATIENT" for p in patients)
    by_uid = {s.StudyInstanceUID: s for s in studies}
    assert set(by_uid) == {STUDY_A, STUDY_B}
    assert by_uid[STUDY_A].NumberOfStudyRelatedInstances == 3
    assert by_uid[STUDY_A].ModalitiesInStudy == "CT"
    assert by_uid[STUDY_A].PatientID == "PA"
    assert by_uid[STUDY_A].RetrieveAETitle == "ARCHIVE"
    assert sorted(s.SeriesInstanceUID for s in series) == [SERIES_A1, SERIES_A2]
    assert all(s.Modality == "CT" for s in series)
    assert sorted(i.SOPInstanceUID for i in images) == [SERIES_A1 + ".1", SERIES_A1 + ".2"]
    assert none == []


async def test_find_answers_ff01_for_keys_it_does_not_match(archive_root: Path) -> None:
    statuses: list[int] = []
    async with Node(archive_root) as node, node.client() as client:
        responses = client.c_find({"StudyInstanceUID": STUDY_B, "PatientAge": None}, level="STUDY")
        responses.request.on_response = lambda rq, rsp: statuses.append(rsp.status)  # type: ignore[attr-defined]
        (match,) = [m async for m in responses]
    assert statuses == [0xFF01, 0x0000]
    assert "PatientAge" in match and match.PatientAge in (None, "")


async def test_find_bad_identifiers_fail_with_a_comment(archive_root: Path) -> None:
    async with Node(archive_root) as node, node.client() as client:
        responses = client.c_find({"PatientID": "PA"}, level="STUDY")
        assert responses.request.identifier is not None
        del responses.request.identifier.QueryRetrieveLevel
        with pytest.raises(CFindError) as missing:
            _ = [m async for m in responses]
        with pytest.raises(CFindError) as patient_in_study_root:
            _ = [m async for m in client.c_find({"PatientID": "PA"}, level="PATIENT")]
        with pytest.raises(CFindError) as bad_level:
            frame = Dataset()
            frame.QueryRetrieveLevel = "FRAME"
            _ = [m async for m in client.c_find(frame)]
        with pytest.raises(CFindError) as no_unique_key:
            _ = [m async for m in client.c_find({"SeriesInstanceUID": None}, level="SERIES")]
        with pytest.raises(CFindError) as bad_date:
            _ = [m async for m in client.c_find({"StudyDate": "2024-13-45"}, level="STUDY")]
        # the association still serves
        assert len([m async for m in client.c_find({"PatientID": "PB"}, level="STUDY")]) == 1
    assert missing.value.status == 0xA900
    assert "QueryRetrieveLevel" in (missing.value.error_comment or "")
    assert missing.value.offending_elements == [0x00080052]
    assert patient_in_study_root.value.status == 0xA900
    assert "Study Root" in (patient_in_study_root.value.error_comment or "")
    assert bad_level.value.status == 0xA900
    assert "FRAME" in (bad_level.value.error_comment or "")
    assert no_unique_key.value.status == 0xA900
    assert "StudyInstanceUID" in (no_unique_key.value.error_comment or "")
    assert bad_date.value.status == 0xA900 and bad_date.value.error_comment


class _GatedIndex(SQLiteIndex):
    """An index whose C-FIND results stop after ``after`` matches until ``gate`` is set."""

    def __init__(self, path: str, after: int) -> None:
        super().__init__(path)
        self.after = after
        self.gate = threading.Event()

    def query(self, level: str, query: Any, **kwargs: Any) -> Iterator[dict[str, object]]:
        matches = super().query(level, query, **kwargs)

        def gated() -> Iterator[dict[str, object]]:
            for i, match in enumerate(matches):
                if i == self.after:
                    assert self.gate.wait(10)
                yield match

        return gated()


async def test_find_cancel_between_matches(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    index = _GatedIndex(str(tmp_path / "index.sqlite"), after=64)  # one fetch of matches
    index.add_many(
        InstanceRecord(
            sop_instance_uid=f"1.2.3.{i}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            study_instance_uid=f"1.2.4.{i}",
            series_instance_uid=f"1.2.5.{i}",
            path=f"{i}.dcm",
            size=1,
            patient_id=f"P{i:03d}",
        )
        for i in range(150)
    )
    async with Node(root, index=index) as node, node.client() as client:
        responses = client.c_find({"PatientID": None}, level="STUDY")
        got = 0
        async for _match in responses:
            got += 1
            if got == 1:
                await responses.cancel()
                await node.cancel_seen()
                index.gate.set()
        assert responses.final_status == Status.CANCEL
        assert got == 64
        assert await client.c_echo() == Status.SUCCESS


# -- C-MOVE ----------------------------------------------------------------------------------------


class _Destination:
    """A storage node for C-MOVE sub-operations that records what it received; ``gate``, when
    set, holds the answer of its ``hold_at``-th C-STORE until the test opens it."""

    def __init__(self, root: Path, ae: str = "DEST", hold_at: int = 0) -> None:
        self.received: list[tuple[str, str | None, int | None]] = []
        self.gate = asyncio.Event()
        self.reached = asyncio.Event()
        outer = self

        class Dest(StorageService):
            async def on_c_store(self, request: ReceivedCStore) -> Any:
                message = request.message
                outer.received.append(
                    (
                        request.sop_instance_uid,
                        request.move_originator_ae_title,
                        getattr(message, "move_originator_message_id", None),
                    )
                )
                if hold_at and len(outer.received) == hold_at:
                    outer.reached.set()
                    await outer.gate.wait()
                return await super().on_c_store(request)

        self.factory = Dest.factory(root, ae_title=ae, fsync=False)
        self.server = DicomServer(self.factory, "127.0.0.1", 0)


async def test_move_to_a_peer_with_progress_and_originator(archive_root: Path) -> None:
    dest = _Destination(archive_root.parent / "dest")
    async with dest.server:
        peers = {"DEST": ("127.0.0.1", dest.server.port)}
        async with Node(archive_root, peers=peers) as node, node.client() as client:
            progress = [
                p async for p in client.c_move({"StudyInstanceUID": STUDY_A}, destination="DEST")
            ]
    assert [(p.remaining, p.completed, p.failed) for p in progress] == [
        (2, 1, 0),
        (1, 2, 0),
        (None, 3, 0),
    ]
    assert progress[-1].status == Status.SUCCESS and progress[-1].final
    assert sorted(uid for uid, _, _ in dest.received) == [
        SERIES_A1 + ".1",
        SERIES_A1 + ".2",
        SERIES_A2 + ".3",
    ]
    assert {(ae, mid) for _, ae, mid in dest.received} == {("SCU", 1)}
    stored = sorted((archive_root.parent / "dest").rglob("*.dcm"))
    assert len(stored) == 3
    original = dcmread(archive_root / f"{SERIES_A2}.3.dcm")
    copy = dcmread(next(p for p in stored if p.name == f"{SERIES_A2}.3.dcm"))
    assert copy.PixelData == original.PixelData


async def test_move_series_and_image_levels_in_patient_root(archive_root: Path) -> None:
    dest = _Destination(archive_root.parent / "dest")
    async with dest.server:
        peers = {"DEST": ("127.0.0.1", dest.server.port)}
        async with Node(archive_root, peers=peers) as node, node.client() as client:
            series = [
                p
                async for p in client.c_move(
                    {
                        "PatientID": "PA",
                        "StudyInstanceUID": STUDY_A,
                        "SeriesInstanceUID": SERIES_A1,
                    },
                    destination="DEST",
                    model="patient",
                    level="SERIES",
                )
            ]
            image = [
                p
                async for p in client.c_move(
                    {
                        "PatientID": "PB",
                        "StudyInstanceUID": STUDY_B,
                        "SeriesInstanceUID": SERIES_B1,
                        "SOPInstanceUID": SERIES_B1 + ".4",
                    },
                    destination="DEST",
                    model="patient",
                    level="IMAGE",
                )
            ]
    assert series[-1].completed == 2 and image[-1].completed == 1
    assert len(dest.received) == 3


async def test_move_unknown_destination_is_a801(archive_root: Path) -> None:
    async with Node(archive_root, peers={}) as node, node.client() as client:
        with pytest.raises(CMoveError) as err:
            _ = [
                p async for p in client.c_move({"StudyInstanceUID": STUDY_A}, destination="NOBODY")
            ]
        assert err.value.status == 0xA801
        assert "NOBODY" in (err.value.error_comment or "")
        assert await client.c_echo() == Status.SUCCESS


async def test_move_to_a_refusing_destination_fails_every_sub_operation(
    archive_root: Path,
) -> None:
    dest = _Destination(archive_root.parent / "dest", ae="OTHER")  # rejects the called AE DEST
    async with dest.server:
        peers = {"DEST": ("127.0.0.1", dest.server.port), "CLOSED": ("127.0.0.1", free_port())}
        async with Node(archive_root, peers=peers) as node, node.client() as client:
            for destination in ("DEST", "CLOSED"):
                with pytest.raises(CMoveError) as err:
                    _ = [
                        p
                        async for p in client.c_move(
                            {"StudyInstanceUID": STUDY_A}, destination=destination
                        )
                    ]
                progress = err.value.progress
                assert err.value.status == 0xA702
                assert progress is not None and (progress.completed, progress.failed) == (0, 3)
                assert len(progress.failed_instances) == 3
                assert destination in (err.value.error_comment or "")
            # the node keeps serving
            assert await client.c_echo() == Status.SUCCESS
    assert dest.received == []


async def test_move_to_a_destination_that_vanishes_midway(archive_root: Path) -> None:
    dest = _Destination(archive_root.parent / "dest", hold_at=2)
    await dest.server.start()
    try:
        peers = {"DEST": ("127.0.0.1", dest.server.port)}
        async with Node(archive_root, peers=peers) as node, node.client() as client:
            responses = client.c_move({"StudyInstanceUID": STUDY_A}, destination="DEST")
            seen: list[RetrieveProgress] = []
            closing: asyncio.Future[None] | None = None
            async for p in responses:
                seen.append(p)
                if len(seen) == 1:
                    await asyncio.wait_for(dest.reached.wait(), 10)
                    # aborts the association whose second C-STORE is held
                    closing = asyncio.ensure_future(dest.server.close(abort_after=0))
                elif len(seen) == 2:  # the archive has seen the abort: let the handler end
                    dest.gate.set()
            assert await client.c_echo() == Status.SUCCESS
            assert closing is not None
            await closing
    finally:
        dest.gate.set()
        await dest.server.close(abort_after=0)
    final = seen[-1]
    assert final.status == 0xB000
    assert (final.completed, final.failed) == (1, 2)
    assert len(final.failed_instances) == 2
    assert "stopped" in (final.error_comment or "")


async def test_move_with_a_file_gone_from_disk_is_a_warning(archive_root: Path) -> None:
    dest = _Destination(archive_root.parent / "dest")
    async with dest.server:
        peers = {"DEST": ("127.0.0.1", dest.server.port)}
        async with Node(archive_root, peers=peers) as node, node.client() as client:
            os.unlink(archive_root / f"{SERIES_A1}.2.dcm")
            progress = [
                p async for p in client.c_move({"StudyInstanceUID": STUDY_A}, destination="DEST")
            ]
    final = progress[-1]
    assert final.status == 0xB000
    assert (final.completed, final.failed, final.warning) == (2, 1, 0)
    assert final.failed_instances == (SERIES_A1 + ".2",)
    assert len(dest.received) == 2


async def test_move_cancel_stops_with_counts(archive_root: Path) -> None:
    dest = _Destination(archive_root.parent / "dest", hold_at=2)
    async with dest.server:
        peers = {"DEST": ("127.0.0.1", dest.server.port)}
        async with Node(archive_root, peers=peers) as node, node.client() as client:
            responses = client.c_move({"StudyInstanceUID": STUDY_A}, destination="DEST")
            seen: list[RetrieveProgress] = []
            async for p in responses:
                seen.append(p)
                if len(seen) == 1:
                    await asyncio.wait_for(dest.reached.wait(), 10)
                    await responses.cancel()
                    # let the cancel arrive before the held sub-operation completes
                    await node.cancel_seen()
                    dest.gate.set()
            assert await client.c_echo() == Status.SUCCESS
    final = seen[-1]
    assert final.status == Status.CANCEL
    assert (final.remaining, final.completed, final.failed) == (1, 2, 0)
    assert len(dest.received) == 2


async def test_move_bad_identifier_is_a900(archive_root: Path) -> None:
    async with Node(archive_root, peers={"DEST": ("127.0.0.1", 1)}) as node, node.client() as c:
        with pytest.raises(CMoveError) as err:
            _ = [p async for p in c.c_move({"StudyInstanceUID": "*"}, destination="DEST")]
    assert err.value.status == 0xA900


# -- C-GET -----------------------------------------------------------------------------------------


async def test_get_sends_instances_back_on_the_association(archive_root: Path) -> None:
    out = archive_root.parent / "got"
    async with Node(archive_root) as node, node.client() as client:
        progress = [
            p
            async for p in client.c_get(
                {"StudyInstanceUID": STUDY_A, "SeriesInstanceUID": SERIES_A1},
                level="SERIES",
                out_dir=out,
            )
        ]
        os.unlink(archive_root / f"{SERIES_A2}.3.dcm")
        partial = [p async for p in client.c_get({"StudyInstanceUID": STUDY_A}, out_dir=out)]
    assert [(p.remaining, p.completed) for p in progress] == [(1, 1), (None, 2)]
    assert progress[-1].status == Status.SUCCESS
    got = sorted(p.name for p in out.glob("*.dcm"))
    assert got == [f"{SERIES_A1}.1.dcm", f"{SERIES_A1}.2.dcm"]
    original = dcmread(archive_root / f"{SERIES_A1}.1.dcm")
    assert dcmread(out / f"{SERIES_A1}.1.dcm").PixelData == original.PixelData
    assert partial[-1].status == 0xB000
    assert (partial[-1].completed, partial[-1].failed) == (2, 1)
    assert partial[-1].failed_instances == (SERIES_A2 + ".3",)


async def test_get_cancel_stops_with_counts(archive_root: Path) -> None:
    out = archive_root.parent / "got"
    reached = asyncio.Event()
    gate = asyncio.Event()
    stored: list[str] = []

    async def store(request: ReceivedCStore) -> int:
        stored.append(request.sop_instance_uid)
        if len(stored) == 2:
            reached.set()
            await gate.wait()
        return Status.SUCCESS

    async with Node(archive_root) as node, node.client() as client:
        responses = client.c_get({"StudyInstanceUID": STUDY_A}, store=store)
        seen: list[RetrieveProgress] = []
        async for p in responses:
            seen.append(p)
            if len(seen) == 1:
                await asyncio.wait_for(reached.wait(), 10)
                await responses.cancel()
                await node.cancel_seen()
                gate.set()
        assert await client.c_echo() == Status.SUCCESS
    assert not out.exists()
    final = seen[-1]
    assert final.status == Status.CANCEL
    assert (final.remaining, final.completed) == (1, 2)


def test_index_file_is_hidden_from_the_walk(tmp_path: Path) -> None:
    from dicomnet.archive.index import build_index

    root = tmp_path / "a"
    _archive(root)
    open_index(root).close()
    with SQLiteIndex(":memory:") as fresh:
        assert build_index(root, fresh) == 4
