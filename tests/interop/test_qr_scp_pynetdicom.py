"""pynetdicom as the query/retrieve SCU against dicomnet's ArchiveService over 127.0.0.1: C-FIND in
the Patient Root and Study Root models, C-MOVE to a pynetdicom storage SCP (with the Move
Originator it sees), C-GET with SCP/SCU role selection, and the failure statuses (a missing
Query/Retrieve Level, an unknown move destination)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicomnet.service import AssociationInfo, Service
from dicomnet.services.qr import ArchiveService
from dicomnet.services.storage import open_index
from tests.helpers import free_port, require_pynetdicom
from tests.interop.conftest import ThreadedServer
from tests.interop.test_pynetdicom import dataset_bytes
from tests.interop.test_qr_client_dcmqrscp import Archive, make_archive

pytestmark = pytest.mark.interop

PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"


class Setup:
    def __init__(self, archive: Archive, server: ThreadedServer, dest_port: int) -> None:
        self.archive = archive
        self.server = server
        self.dest_port = dest_port


@pytest.fixture
def setup(
    tmp_path: Path,
    threaded_server: Callable[[Callable[[AssociationInfo], Service]], ThreadedServer],
) -> Iterator[Setup]:
    require_pynetdicom()
    archive = make_archive(tmp_path / "archive", rows=16)
    index = open_index(archive.root)
    dest_port = free_port()
    factory = ArchiveService.factory(
        archive.root,
        index=index,
        fsync=False,
        aet="ARCHIVE",
        peers={"PYNSTORE": ("127.0.0.1", dest_port)},
    )
    server = threaded_server(factory)
    yield Setup(archive, server, dest_port)
    server.stop()
    assert factory.index_writer is not None
    factory.index_writer.close()
    index.close()


def _associate(port: int, contexts: list[str], **kwargs: Any) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for uid in contexts:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVE", **kwargs)
    assert assoc.is_established
    return assoc


def _query(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_c_find_both_models(setup: Setup) -> None:
    assoc = _associate(setup.server.port, [PATIENT_FIND, STUDY_FIND])
    try:
        patients = list(
            assoc.send_c_find(_query("PATIENT", PatientName="SMITH*", PatientID=""), PATIENT_FIND)
        )
        studies = list(
            assoc.send_c_find(
                _query("STUDY", StudyDate="-20231231", StudyInstanceUID="", PatientName=""),
                STUDY_FIND,
            )
        )
    finally:
        assoc.release()
    assert [s.Status for s, _ in patients] == [0xFF00, 0xFF00, 0x0000]
    assert sorted(str(i.PatientName) for _, i in patients[:-1]) == ["SMITHERS^ANN", "SMITH^JOHN"]
    assert [s.Status for s, _ in studies] == [0xFF00, 0x0000]
    (_, match), _final = studies
    assert match.PatientName == "SMITHERS^ANN"
    assert match.StudyInstanceUID in setup.archive.studies


def test_c_find_without_level_fails_with_a_comment(setup: Setup) -> None:
    assoc = _associate(setup.server.port, [STUDY_FIND])
    try:
        ident = Dataset()
        ident.PatientID = ""
        ((status, _),) = list(assoc.send_c_find(ident, STUDY_FIND))
    finally:
        assoc.release()
    assert status.Status == 0xA900
    assert "QueryRetrieveLevel" in status.ErrorComment


def check_counters(results: list[tuple[Any, Any]], count: int) -> None:
    """The four sub-operation counters as pynetdicom decodes them (audit item 1): in each pending
    response Remaining > 0, nothing failed or warned, and the four add up to ``count``; the final
    response has no Remaining left and no Warning."""
    names = ("Remaining", "Completed", "Failed", "Warning")
    for status, _identifier in results[:-1]:
        assert status.Status == 0xFF00
        got = {n: status.get(f"NumberOf{n}Suboperations") for n in names}
        assert got["Remaining"] and got["Remaining"] > 0, got
        assert got["Failed"] == got["Warning"] == 0, got
        assert sum(got.values()) == count, got
    final = results[-1][0]
    assert final.get("NumberOfRemainingSuboperations") in (None, 0)
    assert final.get("NumberOfWarningSuboperations") == 0


def test_c_move_to_a_pynetdicom_storage_scp(setup: Setup) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage as CT

    received: dict[str, tuple[bytes, str, int]] = {}

    def on_store(event: Any) -> int:
        rq = event.request
        received[str(rq.AffectedSOPInstanceUID)] = (
            bytes(rq.DataSet.getvalue()),
            str(rq.MoveOriginatorApplicationEntityTitle).strip(),
            int(rq.MoveOriginatorMessageID),
        )
        return 0x0000

    dest = AE(ae_title="PYNSTORE")
    dest.add_supported_context(CT, [ExplicitVRLittleEndian])
    scp = dest.start_server(
        ("127.0.0.1", setup.dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        study = next(iter(setup.archive.studies))
        assoc = _associate(setup.server.port, [STUDY_MOVE])
        try:
            results = list(
                assoc.send_c_move(_query("STUDY", StudyInstanceUID=study), "PYNSTORE", STUDY_MOVE)
            )
            unknown = list(
                assoc.send_c_move(_query("STUDY", StudyInstanceUID=study), "NOBODY", STUDY_MOVE)
            )
        finally:
            assoc.release()
    finally:
        scp.shutdown()
    statuses = [s.Status for s, _ in results]
    assert statuses == [0xFF00] * (len(statuses) - 1) + [0x0000]
    final = results[-1][0]
    assert final.NumberOfCompletedSuboperations == len(setup.archive.instances(study))
    assert final.NumberOfFailedSuboperations == 0
    check_counters(results, len(setup.archive.instances(study)))
    assert sorted(received) == sorted(setup.archive.instances(study))
    for uid, (data, originator, message_id) in received.items():
        assert data == dataset_bytes(setup.archive.files[uid])
        assert (originator, message_id) == ("PYNSCU", 1)
    assert unknown[-1][0].Status == 0xA801


def test_c_get_with_role_selection(setup: Setup) -> None:
    from pynetdicom import AE, build_role, evt

    received: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = bytes(
            event.request.DataSet.getvalue()
        )
        return 0x0000

    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_GET, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        "127.0.0.1",
        setup.server.port,
        ae_title="ARCHIVE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    study = next(iter(setup.archive.studies))
    try:
        results = list(assoc.send_c_get(_query("STUDY", StudyInstanceUID=study), STUDY_GET))
    finally:
        assoc.release()
    final = results[-1][0]
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == len(setup.archive.instances(study))
    check_counters(results, len(setup.archive.instances(study)))
    assert sorted(received) == sorted(setup.archive.instances(study))
    for uid, data in received.items():
        assert data == dataset_bytes(setup.archive.files[uid])
