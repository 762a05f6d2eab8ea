"""dicomnet's client against dicomnet's server over 127.0.0.1: echo, store, release, abort,
rejection, the request queue with an asynchronous operations window."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from pydicom import dcmread

import dicomnet
from dicomnet import DicomClient, DicomServer, Status
from dicomnet.negotiation import AssociationDecision
from dicomnet.service import ReceivedCStore
from dicomnet.services.storage import StorageService
from dicomnet.uids import UNCOMPRESSED, is_storage
from tests.helpers import make_ct, write_ct


def _digest_dataset(path: Path) -> str:
    ds = dcmread(path)
    return hashlib.sha256(ds.PixelData).hexdigest()


async def test_echo(tmp_path: Path) -> None:
    factory = StorageService.factory(tmp_path / "store", fsync=False)
    async with DicomServer(factory, port=0) as server:
        async with DicomClient("127.0.0.1", server.port, "SCU", "DICOMNET") as client:
            assert await client.c_echo() == Status.SUCCESS
            assert await client.c_echo() == Status.SUCCESS


async def test_store_file_and_dataset(tmp_path: Path) -> None:
    store = tmp_path / "store"
    factory = StorageService.factory(store, fsync=True)
    src = tmp_path / "in" / "a.dcm"
    ds = write_ct(src, rows=128, columns=128)
    ds2 = make_ct(rows=16, columns=16)
    async with DicomServer(factory, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            assert await client.c_store(src) == Status.SUCCESS
            assert await client.c_store(ds2) == Status.SUCCESS
    out = store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert out.exists()
    assert dcmread(out).PixelData == ds.PixelData
    out2 = store / ds2.StudyInstanceUID / ds2.SeriesInstanceUID / f"{ds2.SOPInstanceUID}.dcm"
    assert dcmread(out2).PixelData == ds2.PixelData
    # Nothing is left in the temporary folder.
    assert list((store / ".incoming").iterdir()) == []


async def test_queue_with_async_window(tmp_path: Path) -> None:
    store = tmp_path / "store"
    factory = StorageService.factory(store, fsync=False, max_operations_performed=4)
    files = [tmp_path / "in" / f"{i}.dcm" for i in range(20)]
    datasets = [write_ct(p, rows=32, columns=32) for p in files]
    statuses: list[int] = []
    async with DicomServer(factory, port=0) as server:
        async with DicomClient("127.0.0.1", server.port) as client:
            client.negotiate_async_ops(8)
            for p in files:
                await client.add_request(
                    dicomnet.CStoreRequest.from_file(
                        p, on_response=lambda rq, rsp: statuses.append(rsp.status)
                    )
                )
            await client.send()
            assert client.negotiated is not None
            assert client.negotiated.max_operations_invoked == 4
    assert statuses == [0] * 20
    stored = sorted(p.name for p in store.rglob("*.dcm"))
    assert stored == sorted(f"{d.SOPInstanceUID}.dcm" for d in datasets)


async def test_rejected_called_ae(tmp_path: Path) -> None:
    factory = StorageService.factory(tmp_path, ae_title="STORESCP", fsync=False)
    async with DicomServer(factory, port=0) as server:
        client = DicomClient("127.0.0.1", server.port, "SCU", "WRONG")
        with pytest.raises(dicomnet.AssociationRejected) as info:
            await client.c_echo()
        assert "called AE title not recognized" in str(info.value)


async def test_client_abort_leaves_no_partial_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    factory = StorageService.factory(store, fsync=False)
    async with DicomServer(factory, port=0) as server:
        client = DicomClient("127.0.0.1", server.port)
        assert await client.c_echo() == 0
        await client.abort()
        # The server goes on serving.
        async with DicomClient("127.0.0.1", server.port) as other:
            assert await other.c_echo() == 0
    assert not list(store.rglob("*.dcm"))


async def test_server_keeps_serving_many_associations(tmp_path: Path) -> None:
    factory = StorageService.factory(tmp_path / "s", fsync=False)
    async with DicomServer(factory, port=0) as server:

        async def one(i: int) -> int:
            async with DicomClient("127.0.0.1", server.port, f"SCU{i}") as client:
                return await client.c_store(make_ct(rows=8, columns=8))

        results = await asyncio.gather(*(one(i) for i in range(8)))
    assert results == [0] * 8


async def test_dimse_timeout_raises_and_the_late_response_is_still_taken() -> None:
    """No response within dimse_timeout: DicomTimeoutError. The request keeps its slot of the
    window until the peer does answer (the association stays usable)."""
    release = asyncio.Event()

    class Slow(dicomnet.Service):
        async def on_c_echo(self, request: object) -> int:
            await release.wait()
            return Status.SUCCESS

    async with DicomServer(Slow, "127.0.0.1", 0) as server:
        async with DicomClient(
            "127.0.0.1", server.port, "SCU", "SLOW", dimse_timeout=0.2
        ) as client:
            with pytest.raises(dicomnet.DicomTimeoutError, match="no response"):
                await client.c_echo()
            release.set()
            assert await client.c_echo() == Status.SUCCESS


class _SlowSCP(dicomnet.Service):
    """A service that overrides on_association_request (as the fo-dicom sample does) and asks
    for a window of 8 with the class attribute; each C-STORE takes 0.2 s."""

    max_operations_performed = 8

    async def on_association_request(
        self, request: dicomnet.AssociationRequest
    ) -> AssociationDecision:
        for pc in request.presentation_contexts:
            if is_storage(pc.abstract_syntax):
                pc.accept(UNCOMPRESSED)
        return request.accept()

    async def on_c_store(self, request: ReceivedCStore) -> int:
        await asyncio.sleep(0.2)
        return Status.SUCCESS


async def _store_eight(port: int) -> tuple[float, int, list[int]]:
    """8 C-STOREs through a window of 8: (seconds for the 8, the window we got, statuses)."""
    statuses: list[int] = []
    async with DicomClient("127.0.0.1", port) as client:
        client.negotiate_async_ops(8)
        for _ in range(8):
            await client.add_request(
                dicomnet.CStoreRequest.from_dataset(
                    make_ct(rows=8, columns=8),
                    on_response=lambda rq, rsp: statuses.append(rsp.status),
                )
            )
        await client.associate()
        assert client.negotiated is not None
        started = time.monotonic()
        await client.send()
        return time.monotonic() - started, client.negotiated.max_operations_invoked, statuses


async def test_the_window_holds_when_the_service_overrides_on_association_request() -> None:
    """Regression: only the default on_association_request copied max_operations_performed into
    the request, so an overriding service silently performed one operation at a time (8 stores
    of 0.2 s took 1.6 s). The class attribute now applies whatever the handler does."""
    async with DicomServer(_SlowSCP, port=0) as server:
        elapsed, window, statuses = await _store_eight(server.port)
    assert window == 8
    assert statuses == [Status.SUCCESS] * 8
    assert elapsed < 0.8, f"8 stores of 0.2 s in a window of 8 took {elapsed:.2f} s"


async def test_the_handler_may_set_its_own_window() -> None:
    """The request's own value wins over the class attribute (PS3.7 D.3.3.3 window answer)."""

    class Two(_SlowSCP):
        async def on_association_request(
            self, request: dicomnet.AssociationRequest
        ) -> AssociationDecision:
            request.max_operations_performed = 2
            return await super().on_association_request(request)

    async with DicomServer(Two, port=0) as server:
        _elapsed, window, statuses = await _store_eight(server.port)
    assert window == 2
    assert statuses == [Status.SUCCESS] * 8


@pytest.mark.slow
async def test_message_ids_cycle_past_65535_on_one_association(tmp_path: Path) -> None:
    """66,000 C-ECHOs on one association: Message ID is a US (PS3.7 §9.1.1.1, §E.1), so the
    client's IDs go 1..65535 and start again at 1 instead of reaching 65,536 or beyond, which
    cannot be encoded. The asynchronous operations window (64) keeps it quick."""
    count = 66_000
    factory = StorageService.factory(tmp_path, fsync=False, max_operations_performed=64)
    async with DicomServer(factory, "127.0.0.1", 0) as server:
        async with DicomClient("127.0.0.1", server.port, "SCU", "DICOMNET") as client:
            client.negotiate_async_ops(64)
            requests = [dicomnet.CEchoRequest() for _ in range(count)]
            for request in requests:
                await client.add_request(request)
            await client.send()
            negotiated = client.negotiated
            assert negotiated is not None and negotiated.max_operations_invoked == 64
            assert await client.c_echo() == Status.SUCCESS
            assert client.negotiated is negotiated  # still the first association
    assert [r.error for r in requests if r.error is not None] == []
    assert all(r.status == Status.SUCCESS for r in requests)
    # With 64 outstanding at most, no ID is in use when its turn comes again.
    assert [r.message_id for r in requests] == [i % 65535 + 1 for i in range(count)]
