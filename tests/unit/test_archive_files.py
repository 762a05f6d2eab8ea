"""Indexing a folder of files (build_index) and repairing the index against it (reconcile)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import UID

from dicomnet.archive.index import SQLiteIndex, build_index, reconcile


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def charset_file(name: str) -> Path:
    (path,) = (p for p in get_charset_files() if Path(p).name == name)
    return Path(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A storescp-like folder: DICOM files in nested folders, a text file, a temp file."""
    root = tmp_path / "store"
    (root / "CT").mkdir(parents=True)
    (root / "MR" / "deep").mkdir(parents=True)
    (root / "RT").mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), root / "CT" / "CT.1.2.3")
    shutil.copy(pydicom_file("MR_small.dcm"), root / "MR" / "deep" / "MR_small.dcm")
    shutil.copy(pydicom_file("rtplan.dcm"), root / "RT" / "rtplan.dcm")
    shutil.copy(charset_file("chrH31.dcm"), root / "chrH31.dcm")
    (root / "notes.txt").write_text("not DICOM")
    (root / "CT" / ".dicomnet-123.part").write_bytes(b"\0" * 200)  # a transfer in progress
    return root


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SQLiteIndex]:
    with SQLiteIndex(tmp_path / "index.sqlite") as idx:
        yield idx


def test_build_index(root: Path, index: SQLiteIndex, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []
    with caplog.at_level(logging.WARNING, logger="dicomnet.archive"):
        assert build_index(root, index, seen.append) == 4
    assert seen == [1, 2, 3, 4, 5]  # the hidden temp file is not examined
    assert "notes.txt" in caplog.text
    by_path = {r.path: r for r in index.records()}
    assert sorted(by_path) == ["CT/CT.1.2.3", "MR/deep/MR_small.dcm", "RT/rtplan.dcm", "chrH31.dcm"]
    ct = by_path["CT/CT.1.2.3"]
    assert ct.size == pydicom_file("CT_small.dcm").stat().st_size
    assert ct.modality == "CT"
    assert ct.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert by_path["RT/rtplan.dcm"].sop_class_uid == "1.2.840.10008.5.1.4.1.1.481.5"
    # ISO 2022 IR 87 decoded on the way in; matched and returned as str, declared as UTF-8.
    assert by_path["chrH31.dcm"].specific_character_set == "\\ISO 2022 IR 87"
    (match,) = index.query("PATIENT", {"PatientName": ("PN", "yamada^tarou")})
    assert match["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert match["SpecificCharacterSet"] == "ISO_IR 192"


def test_build_index_twice_is_harmless(root: Path, index: SQLiteIndex) -> None:
    build_index(root, index)
    assert build_index(root, index) == 4
    assert len(list(index.records())) == 4


def test_reconcile(root: Path, index: SQLiteIndex, caplog: pytest.LogCaptureFixture) -> None:
    build_index(root, index)
    assert reconcile(index, root) == (0, 0)

    (root / "RT" / "rtplan.dcm").unlink()  # a file deleted behind the archive's back
    ds = dcmread(pydicom_file("MR_small.dcm"))  # a file dropped in without the index knowing
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.826.0.1.3680043.8.498.1")
    ds.save_as(root / "MR" / "stray.dcm")
    assert reconcile(index, root) == (1, 1)

    paths = sorted(r.path for r in index.records())
    assert paths == ["CT/CT.1.2.3", "MR/deep/MR_small.dcm", "MR/stray.dcm", "chrH31.dcm"]
    assert list(index.query("STUDY", {"ModalitiesInStudy": ("CS", "RTPLAN")})) == []
    series = index.query(
        "SERIES",
        {
            "StudyInstanceUID": ("UI", ds.StudyInstanceUID),
            "NumberOfSeriesRelatedInstances": ("IS", ""),
        },
    )
    assert [s["NumberOfSeriesRelatedInstances"] for s in series] == [2]

    # A second copy of an indexed instance is reported, not indexed over the first.
    shutil.copy(root / "CT" / "CT.1.2.3", root / "CT" / "copy.dcm")
    with caplog.at_level(logging.WARNING, logger="dicomnet.archive"):
        assert reconcile(index, root) == (0, 0)
    assert "copy.dcm duplicates CT/CT.1.2.3" in caplog.text


def test_files_the_index_cannot_use_are_skipped(
    tmp_path: Path, index: SQLiteIndex, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "odd"
    root.mkdir()
    shutil.copy(pydicom_file("no_meta.dcm"), root / "no_meta.dcm")  # no preamble: not Part 10
    ds = dcmread(pydicom_file("CT_small.dcm"))
    del ds.StudyInstanceUID
    ds.save_as(root / "no_study.dcm")
    (root / "short.dcm").write_bytes(b"DICM")
    with caplog.at_level(logging.WARNING, logger="dicomnet.archive"):
        assert build_index(root, index) == 0
    for name in ("no_meta.dcm", "no_study.dcm", "short.dcm"):
        assert name in caplog.text


def test_open_index_repairs_only_after_an_unclean_stop(root: Path) -> None:
    """A server that stopped cleanly marked its index so; the next start skips the folder walk.
    Without the mark (a crash, or the first start on an existing folder) the start repairs."""
    from dicomnet.services.storage import INDEX_NAME, mark_clean, open_index

    index = open_index(root)  # first start on a storescp folder: every file is indexed
    assert len(list(index.records())) == 4
    mark_clean(index)
    index.close()
    shutil.copy(pydicom_file("CT_small.dcm"), root / "added-while-stopped.dcm")
    index = open_index(root)  # clean: no walk, the new file is not seen
    assert len(list(index.records())) == 4
    assert index.get_state("shutdown") == "running"  # in use until marked clean again
    index.close()  # ... and it never is: a crash
    (root / "RT" / "rtplan.dcm").unlink()
    index = open_index(root)
    paths = sorted(r.path for r in index.records())
    index.close()
    # The copy holds the same instance as CT/CT.1.2.3: a duplicate, logged and not indexed.
    assert paths == ["CT/CT.1.2.3", "MR/deep/MR_small.dcm", "chrH31.dcm"]
    assert (root / INDEX_NAME).is_file()
