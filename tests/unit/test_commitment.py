"""Storage commitment: checking references against the archive, and reports kept until
delivered (PS3.4 Annex J), without a network."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dicomnet.archive.commitment import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    CommitmentReport,
    PendingReports,
    check_references,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def test_check_references_success_missing_conflict_and_incomplete(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"x" * 10)
    (tmp_path / "b.dcm").write_bytes(b"x" * 10)
    (tmp_path / "short.dcm").write_bytes(b"x" * 3)
    index = {
        "1.1": (CT, "a.dcm", 10),
        "1.2": (CT, "b.dcm", 10),
        "1.4": (CT, "short.dcm", 10),  # the file is shorter than stored: not complete
        "1.5": (CT, "gone.dcm", 10),  # the file went away
    }
    calls: list[int] = []

    def lookup(uids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
        calls.append(len(uids))
        return {u: index[u] for u in uids if u in index}

    refs = [(CT, "1.1"), (MR, "1.2"), (CT, "1.3"), (CT, "1.4"), (CT, "1.5")]
    result = list(check_references(refs, lookup, tmp_path, chunk=2))
    assert result == [
        (CT, "1.1", None),
        (MR, "1.2", CLASS_INSTANCE_CONFLICT),
        (CT, "1.3", NO_SUCH_OBJECT_INSTANCE),
        (CT, "1.4", NO_SUCH_OBJECT_INSTANCE),
        (CT, "1.5", NO_SUCH_OBJECT_INSTANCE),
    ]
    assert calls == [2, 2, 1]  # chunked: never more than `chunk` UIDs per index query


def test_pending_reports_retry_with_backoff_and_survive_reopen(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "index.sqlite"
    reports = PendingReports(path, first_retry=5, max_retry=60, clock=lambda: now[0])
    report = CommitmentReport("2.25.1", [(CT, "1.1")], [(CT, "1.3", NO_SUCH_OBJECT_INSTANCE)])
    assert report.event_type_id == 2
    assert reports.add("MODALITY", report)
    assert not reports.add("MODALITY", report)  # one report per transaction UID
    assert reports.due() == [("2.25.1", "MODALITY")]
    assert [reports.failed("2.25.1", "connection refused") for _ in range(5)] == [5, 10, 20, 40, 60]
    assert reports.due() == []
    reports.close()

    reopened = PendingReports(path, clock=lambda: now[0])
    assert len(reopened) == 1
    assert reopened.next_due() == 1060.0
    now[0] = 1060.0
    assert reopened.due() == [("2.25.1", "MODALITY")]
    got = reopened.get("2.25.1")
    assert got is not None and got[1] == report
    reopened.delivered("2.25.1")
    assert len(reopened) == 0 and reopened.next_due() is None


def test_request_and_report_data_sets_round_trip() -> None:
    import pytest
    from pydicom import Dataset

    from dicomnet.archive.commitment import (
        CommitmentRequestError,
        parse_report,
        parse_request,
        report_dataset,
        request_dataset,
    )

    ds = request_dataset("2.25.7", [(CT, "1.1"), (MR, "1.2")])
    assert parse_request(ds) == ("2.25.7", [(CT, "1.1"), (MR, "1.2")])
    report = CommitmentReport("2.25.7", [(CT, "1.1")], [(MR, "1.2", CLASS_INSTANCE_CONFLICT)])
    out = report_dataset(report)
    assert out.FailedSOPSequence[0].FailureReason == 0x0119
    assert parse_report(out) == report

    # N-ACTION's status for Action Information it cannot use is 0x0115 Invalid argument value
    # (PS3.7 §10.1.4.1.10; 0x0120 and 0x0106 are N-SET/N-CREATE statuses).
    for bad, status in [
        (None, 0x0115),
        (Dataset(), 0x0115),
        (request_dataset("2.25.7", []), 0x0115),
        (request_dataset("not a uid", [(CT, "1.1")]), 0x0115),
        (request_dataset("2.25.7", [(CT, "../etc")]), 0x0115),
    ]:
        with pytest.raises(CommitmentRequestError) as info:
            parse_request(bad)
        assert info.value.status == status
    no_seq = Dataset()
    no_seq.TransactionUID = "2.25.7"
    with pytest.raises(CommitmentRequestError, match="Referenced SOP Sequence"):
        parse_request(no_seq)
