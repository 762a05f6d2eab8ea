"""MPPS store: the state rules of PS3.4 F.7.2, without a network."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.sequence import Sequence

from dicomnet.archive.mpps import (
    DUPLICATE_SOP_INSTANCE,
    INVALID_ATTRIBUTE_VALUE,
    NO_SUCH_SOP_INSTANCE,
    PROCESSING_FAILURE,
    SUCCESS,
    MppsStore,
    worklist_item_id,
)

UID = "1.2.826.0.1.3680043.10.1472.99.1"


def _create(status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20261201"
    ds.PerformedProcedureStepStartTime = "090000"
    ds.PerformedProcedureStepEndDate = ""
    ds.PatientID = "P1"
    step = Dataset()
    step.AccessionNumber = "A1"
    step.RequestedProcedureID = "RPA1"
    step.ScheduledProcedureStepID = "SPS1"
    step.StudyInstanceUID = "1.2.3.1"
    ds.ScheduledStepAttributesSequence = Sequence([step])
    return ds


def _set(status: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261201"
    ds.PerformedProcedureStepEndTime = "093000"
    return ds


def test_create_then_complete_then_no_more_updates() -> None:
    store = MppsStore(":memory:")
    created = store.create(UID, _create(), calling_ae="CT1")
    assert created.status == SUCCESS
    record = store.get(UID)
    assert record is not None and record.status == "IN PROGRESS"
    assert record.worklist_item_id == "A1|RPA1|SPS1" == worklist_item_id(_create())
    assert record.calling_ae == "CT1"

    progress = Dataset()
    progress.PerformedProcedureStepDescription = "still scanning"
    assert store.set(UID, progress).status == SUCCESS

    done = store.set(UID, _set("COMPLETED"))
    assert done.status == SUCCESS and done.dataset is not None
    assert done.dataset.PerformedProcedureStepEndTime == "093000"
    assert done.dataset.PerformedProcedureStepDescription == "still scanning"
    record = store.get(UID)
    assert record is not None and record.status == "COMPLETED"

    again = store.set(UID, _set("DISCONTINUED"))
    assert again.status == PROCESSING_FAILURE
    assert again.comment is not None and "may no longer be updated" in again.comment
    record = store.get(UID)
    assert record is not None and record.status == "COMPLETED"  # unchanged


def test_discontinued_is_final_too() -> None:
    store = MppsStore(":memory:")
    store.create(UID, _create())
    assert store.set(UID, _set("DISCONTINUED")).status == SUCCESS
    assert store.set(UID, _set("IN PROGRESS")).status == PROCESSING_FAILURE


def test_create_needs_in_progress_and_a_new_uid() -> None:
    store = MppsStore(":memory:")
    bad = store.create(UID, _create("COMPLETED"))
    assert bad.status == INVALID_ATTRIBUTE_VALUE and "IN PROGRESS" in (bad.comment or "")
    assert store.get(UID) is None
    assert store.create(UID, _create()).status == SUCCESS
    assert store.create(UID, _create()).status == DUPLICATE_SOP_INSTANCE


def test_set_unknown_instance_and_bad_status_value() -> None:
    store = MppsStore(":memory:")
    assert store.set(UID, _set("COMPLETED")).status == NO_SUCH_SOP_INSTANCE
    store.create(UID, _create())
    result = store.set(UID, _set("DONE"))
    assert result.status == INVALID_ATTRIBUTE_VALUE
    record = store.get(UID)
    assert record is not None and record.status == "IN PROGRESS"
    assert "PerformedProcedureStepEndTime" not in record.dataset  # rolled back whole


def test_records_by_worklist_item() -> None:
    store = MppsStore(":memory:")
    store.create(UID, _create())
    store.create(UID + ".2", _create())
    other = _create()
    other.ScheduledStepAttributesSequence[0].AccessionNumber = "A2"
    store.create(UID + ".3", other)
    assert [r.sop_instance_uid for r in store.records(worklist_item_id="A1|RPA1|SPS1")] == [
        UID,
        UID + ".2",
    ]
    assert len(list(store.records())) == 3
