"""The server side of C-GET sub-operations (PS3.4 §C.4.3): a handler sends stored instances back
to the requestor as C-STORE-RQs on the same association, with the roles negotiated by SCP/SCU
role selection; and C-CANCEL reaches a running handler at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet import DicomClient, DicomServer, Status
from dicomnet.dimse import commands as c
from dicomnet.negotiation import ProposedContext
from dicomnet.service import (
    AssociationInfo,
    ReceivedCFind,
    ReceivedCGet,
    ReceivedCStore,
    Response,
    Service,
)
from tests.helpers import write_ct

STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _get_service(files: list[Path]) -> type[Service]:
    class GetSCP(Service):
        abstract_syntaxes = (STUDY_GET, STUDY_FIND)

        async def on_c_get(self, request: ReceivedCGet) -> AsyncIterator[Response]:
            done = failed = 0
            for i, path in enumerate(files):
                status = await request.store(path)
                if status == Status.SUCCESS:
                    done += 1
                else:
                    failed += 1
                yield Response(
                    Status.PENDING,
                    extra={
                        "number_of_remaining_suboperations": len(files) - i - 1,
                        "number_of_completed_suboperations": done,
                        "number_of_failed_suboperations": failed,
                        "number_of_warning_suboperations": 0,
                    },
                )
            yield Response(
                Status.SUCCESS if not failed else 0xB000,
                extra={
                    "number_of_completed_suboperations": done,
                    "number_of_failed_suboperations": failed,
                    "number_of_warning_suboperations": 0,
                },
            )

    return GetSCP


def _query() -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = "1.2.3"
    return q


async def test_c_get_sends_instances_back(tmp_path: Path) -> None:
    files = [tmp_path / "src" / f"{i}.dcm" for i in range(5)]
    sent = [write_ct(p, rows=64, columns=64) for p in files]
    received: dict[str, bytes] = {}

    async def store(request: ReceivedCStore) -> int:
        received[request.sop_instance_uid] = dcmread(request.path).PixelData
        return Status.SUCCESS

    async with DicomServer(_get_service(files), port=0) as server:
        async with DicomClient("127.0.0.1", server.port, "GETSCU", "ANY") as client:
            contexts = [ProposedContext(CTImageStorage, [ExplicitVRLittleEndian])]
            responses = [m async for m in client.c_get(_query(), store, contexts)]
    assert [getattr(m, "status", None) for m in responses] == [Status.PENDING] * 5 + [
        Status.SUCCESS
    ]
    assert responses[-1].completed == 5
    assert received == {ds.SOPInstanceUID: ds.PixelData for ds in sent}


async def test_c_get_reencodes_uncompressed_and_counts_refusals(tmp_path: Path) -> None:
    files = [tmp_path / "src" / f"{i}.dcm" for i in range(3)]
    for p in files:
        write_ct(p, rows=16, columns=16)
    files.append(tmp_path / "missing.dcm")  # gone from disk: a failed sub-operation

    async def store(request: ReceivedCStore) -> int:
        assert request.transfer_syntax == ImplicitVRLittleEndian
        return 0xA700 if request.sop_instance_uid == dcmread(files[0]).SOPInstanceUID else 0

    async with DicomServer(_get_service(files), port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            contexts = [ProposedContext(CTImageStorage, [ImplicitVRLittleEndian])]
            responses = [m async for m in client.c_get(_query(), store, contexts)]
    final = responses[-1]
    assert getattr(final, "status", None) == 0xB000
    assert final.completed == 2
    assert final.failed == 2


async def test_c_cancel_reaches_a_running_find(tmp_path: Path) -> None:
    started = asyncio.Event()

    class SlowFind(Service):
        abstract_syntaxes = (STUDY_FIND,)

        async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset]:
            for i in range(1000):
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                ds.StudyInstanceUID = f"1.2.{i}"
                yield ds
                started.set()
                # Wait for the cancel, bounded: it must arrive while this handler runs.
                try:
                    await asyncio.wait_for(request.cancelled.wait(), 5)
                except TimeoutError:
                    pass

    async with DicomServer(SlowFind, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            matches = 0
            async for _match in client.c_find(_query(), STUDY_FIND):
                matches += 1
                assert client._assoc is not None
                rq_id = next(iter(client._pending))
                ctx = client._assoc.negotiated.find_context(STUDY_FIND)  # type: ignore[union-attr]
                assert ctx is not None
                await client._assoc.send_message(
                    ctx.context_id, c.CCancelRQ(message_id_being_responded_to=rq_id)
                )
    assert started.is_set()
    assert matches == 1


def test_default_association_accepts_storage_with_scp_role_for_get() -> None:
    from dicomnet.negotiation import AssociationRequest, PresentationContext

    class GetOnly(Service):
        async def on_c_get(self, request: ReceivedCGet) -> AsyncIterator[Response]:
            yield Response(Status.SUCCESS)

    info = AssociationInfo(1, "127.0.0.1", 1)
    pc = PresentationContext(1, CTImageStorage, [ExplicitVRLittleEndian])
    pc.proposed_scu_role, pc.proposed_scp_role = False, True
    plain = PresentationContext(3, CTImageStorage, [ExplicitVRLittleEndian])
    request = AssociationRequest("A", "B", [pc, plain])
    asyncio.run(GetOnly(info).on_association_request(request))
    assert pc.accepted and not plain.accepted
