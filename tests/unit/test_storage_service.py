"""The storage service's handler without a socket: a received instance (a temporary Part 10
file, as the sink leaves it) is placed by the layout and indexed from one scan of its first
bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

import dicomnet.sinks
from dicomnet.archive.index import SQLiteIndex
from dicomnet.dataset import encode_dataset
from dicomnet.dimse.commands import CStoreRQ
from dicomnet.dimse.status import Status
from dicomnet.negotiation import NegotiatedContext
from dicomnet.service import AssociationInfo, ReceivedCStore
from dicomnet.services import storage
from dicomnet.services.storage import StorageService
from dicomnet.sinks import FileSink, file_meta_bytes
from tests.helpers import make_ct

INFO = AssociationInfo(1, "127.0.0.1", 104, "SCU", "SCP")
CT_CTX = NegotiatedContext(3, CTImageStorage, ExplicitVRLittleEndian)


@pytest.fixture(autouse=True)
def _no_temp_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicomnet.sinks, "POOL_SIZE", 0)


def _received(folder: Path) -> tuple[ReceivedCStore, Any]:
    ds = make_ct(rows=4, columns=4, patient_name="ROE^JANE")
    rq = CStoreRQ(
        message_id=1,
        affected_sop_class_uid=CTImageStorage,
        affected_sop_instance_uid=ds.SOPInstanceUID,
    )
    sink = FileSink(
        folder, file_meta_bytes(CTImageStorage, ds.SOPInstanceUID, CT_CTX.transfer_syntax)
    )
    sink.write(encode_dataset(ds, ExplicitVRLittleEndian))
    sink.finish()
    request = ReceivedCStore(INFO, CT_CTX, rq, path=sink.path, size=sink.size, prefix=sink.prefix)
    return request, ds


async def test_one_scan_gives_the_layout_and_the_index_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[set[int]] = []
    real = storage.scan_attributes

    def counting(prefix: bytes, transfer_syntax: str, tags: set[int]) -> dict[int, str] | None:
        scans.append(set(tags))
        return real(prefix, transfer_syntax, tags)

    monkeypatch.setattr(storage, "scan_attributes", counting)
    with SQLiteIndex(":memory:") as index:
        service = StorageService.factory(tmp_path / "store", fsync=False, index=index)(INFO)
        request, ds = _received(tmp_path / "store" / ".incoming")
        assert await service.on_c_store(request) == Status.SUCCESS
        assert service.index_writer is not None and service.index_writer.close()
        (record,) = index.records()
    assert len(scans) == 1, scans  # once for the layout and the row together
    path = (
        tmp_path / "store" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    )
    assert path.is_file() and request.saved_to == path
    assert record.path == path.relative_to(tmp_path / "store").as_posix()
    assert (record.patient_name, record.modality, record.instance_number) == ("ROE^JANE", "CT", "1")
    assert record.size == path.stat().st_size


async def test_without_an_index_only_the_layout_is_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[set[int]] = []
    real = storage.scan_attributes

    def counting(prefix: bytes, transfer_syntax: str, tags: set[int]) -> dict[int, str] | None:
        scans.append(set(tags))
        return real(prefix, transfer_syntax, tags)

    monkeypatch.setattr(storage, "scan_attributes", counting)
    service = StorageService.factory(tmp_path / "store", fsync=False)(INFO)
    request, _ds = _received(tmp_path / "store" / ".incoming")
    assert await service.on_c_store(request) == Status.SUCCESS
    assert scans == [{0x0020000D, 0x0020000E}]  # Study and Series Instance UID
