"""C-CANCEL from real peers to dicomnet's ArchiveService (PS3.7 §9.3.2.3, PS3.4 C.4.1.2.3): pynetdicom's
send_c_cancel and DCMTK's ``findscu --cancel`` stop a running C-FIND, which ends with status FE00
after the matches already sent.

The archive's index hands out its matches in fetches of 64 and then waits at a gate, so the C-FIND
is still running when the cancel arrives; the service opens the gate itself when it sees the
C-CANCEL-RQ (or the gate's bounded wait fails the test). So exactly the first fetch's 64 matches
come back, then FE00, and no match after it. The association stays usable.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomnet.archive.index import InstanceRecord
from dicomnet.service import AssociationInfo, Service
from dicomnet.services.qr import ArchiveService
from tests.helpers import require_pynetdicom, require_tool, run
from tests.integration.test_qr_scp import _GatedIndex
from tests.interop.conftest import ThreadedServer

pytestmark = pytest.mark.interop

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"
STUDIES = 150
FETCH = 64  # matches the gated index hands out before it waits


@dataclass
class Gated:
    server: ThreadedServer
    index: _GatedIndex
    cancel_seen: threading.Event


@pytest.fixture
def gated(
    tmp_path: Path,
    threaded_server: Callable[[Callable[[AssociationInfo], Service]], ThreadedServer],
) -> Iterator[Gated]:
    root = tmp_path / "archive"
    root.mkdir()
    index = _GatedIndex(str(tmp_path / "index.sqlite"), after=FETCH)
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
        for i in range(STUDIES)
    )
    cancel_seen = threading.Event()

    class CancelOpensTheGate(ArchiveService):
        async def on_c_find(self, request: Any) -> AsyncIterator[Any]:  # type: ignore[override]
            def seen(waiter: asyncio.Future[Any]) -> None:
                if not waiter.cancelled():
                    cancel_seen.set()
                    index.gate.set()

            waiter = asyncio.ensure_future(request.cancelled.wait())
            waiter.add_done_callback(seen)
            try:
                async for item in super().on_c_find(request):
                    yield item
            finally:
                waiter.cancel()

    factory = CancelOpensTheGate.factory(root, index=index, fsync=False, aet="ARCHIVE")
    server = threaded_server(factory)
    yield Gated(server, index, cancel_seen)
    server.stop()
    assert factory.index_writer is not None
    factory.index_writer.close()
    index.close()


def test_pynetdicom_cancels_a_c_find(gated: Gated) -> None:
    require_pynetdicom()
    from pynetdicom import AE

    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_FIND, [ExplicitVRLittleEndian])
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", gated.server.port, ae_title="ARCHIVE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = ""
    (find_context,) = [c for c in assoc.accepted_contexts if c.abstract_syntax == STUDY_FIND]
    matches: list[str] = []
    statuses: list[int] = []
    try:
        for status, identifier in assoc.send_c_find(query, STUDY_FIND, msg_id=7):
            statuses.append(int(status.Status))
            if status.Status in (0xFF00, 0xFF01):
                matches.append(str(identifier.PatientID))
                if len(matches) == 1:
                    assoc.send_c_cancel(7, find_context.context_id)
        echo = assoc.send_c_echo()
    finally:
        assoc.release()
    assert gated.cancel_seen.is_set()
    assert statuses[-1] == 0xFE00, [hex(s) for s in statuses[-3:]]
    assert statuses[:-1] == [0xFF00] * FETCH
    assert len(set(matches)) == FETCH
    assert echo.Status == 0x0000  # the association outlives the cancelled C-FIND


def test_findscu_cancels_a_c_find(gated: Gated) -> None:
    findscu = require_tool("findscu")
    result = run(
        [
            findscu,
            "-v",
            "-S",
            "--cancel",
            "1",
            "-aec",
            "ARCHIVE",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID",
            "127.0.0.1",
            str(gated.server.port),
        ]
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert gated.cancel_seen.is_set(), out
    pending = [line for line in out.splitlines() if line.startswith("I: Find Response: ")]
    assert len(pending) == FETCH, out
    final = [line for line in out.splitlines() if "Received Final Find Response" in line]
    assert len(final) == 1 and "Cancel" in final[0], out
