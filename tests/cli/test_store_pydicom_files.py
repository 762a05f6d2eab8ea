"""Issue 10: every Part 10 file pydicom ships (all that pydicom itself reads), sent by
``dicomnet store`` in one run to DCMTK's storescp with its default (uncompressed syntaxes only)
and with +xa (every syntax it knows), and to ``dicomnet serve``: each arrives, and its decoded
pixels equal pydicom's decode of the original (exact: the lossy sources are decoded by the same
pydicom plugins, so their values match too). The files that do not get through are listed with
the reason, and the test fails when that list changes either way.

pydicom ships several files with the same SOP Instance UID: storescp gets them all at once
(``+uf``: unique file names) and each original is matched to an arrival with its UID and its
pixels; ``dicomnet serve`` files instances by UID, so it gets them in rounds of distinct UIDs."""

from __future__ import annotations

import re
import shutil
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from dicomnet.pixels import can_decode
from tests.cli.conftest import Serve, dicomnet
from tests.interop.conftest import DcmtkStorescp

np = pytest.importorskip("numpy")

from tests.unit.test_pixels_pydicom_files import FILES, WORD_ORDER  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not can_decode("1.2.840.10008.1.2.4.90"), reason="no codecs extra"),
    pytest.mark.filterwarnings("ignore"),
]

# --- the files that do not get through, and why --------------------------------------------------

#: dicomnet cannot send these anywhere (reported on one line each, no traceback).
NOT_SENDABLE = {
    # Not a usable Part 10 header: reported as "skipped" with the reason.
    "empty_charset_LEI.dcm": "File Meta Information lacks (0002,0002)",
    "meta_missing_tsyntax.dcm": "File Meta Information lacks (0002,0010)",
    "no_meta_group_length.dcm": "without (0002,0000) group length",
    # Issue 10 bug 2: no SOP Class or Instance UID anywhere, so no C-STORE can name it.
    "nested_priv_SQ.dcm": "no SOP Class UID and SOP Instance UID in its meta information",
}
#: Pixel Data that claims more bytes than the file holds: sent as it is, storescp cannot parse
#: it and aborts the association (the other files go on in a new one).
TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm"}
#: Undecodable by pydicom's plugins too (a JPEG Extended codestream libjpeg rejects, a JPEG
#: 2000 header openjpeg cannot read): they only reach a peer that takes them compressed.
UNDECODABLE = {
    "JPEG-lossy.dcm": "cannot be decoded as JPEG Extended",
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot be decoded as JPEG 2000",
}
#: Media Storage Directory (DICOMDIR) is not a storage SOP class: storescp rejects its context.
DICOMDIR = "Media Storage Directory Storage"
#: storescp cannot write a data set without SOP Class UID (0008,0016) (0xC000, "bad DICOM
#: file" in its log): these have none in the data set, only in the meta information.
NO_SOP_CLASS_IN_DATA_SET = {"UN_sequence.dcm", "priv_SQ.dcm"}
#: Every element UN (gdcmconv's output): storescp does not read the SOP Class UID from them when
#: they arrive as they are (+xa); decompressed, they are written with their real VRs.
ALL_UN = {"rtdose_rle.dcm", "rtdose_rle_1frame.dcm"}
#: dicomnet serve files instances by Study and Series Instance UID and refuses (0xC000 with the
#: reason) those that lack them.
NO_STUDY_UID = {
    "JPEGLSNearLossless_08.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
    "UN_sequence.dcm",
    "examples_ybr_color.dcm",
    "priv_SQ.dcm",
}


def _is_dicomdir(path: Path) -> bool:
    return path.name.startswith("DICOMDIR")


def expected_failures(destination: str) -> set[str]:
    """The copies (folder names) that do not arrive at ``destination``."""
    refused = {
        "storescp": {*TRUNCATED, *UNDECODABLE, *NO_SOP_CLASS_IN_DATA_SET},
        "storescp+xa": {*TRUNCATED, *NO_SOP_CLASS_IN_DATA_SET, *ALL_UN},
        # dicomnet serve streams the data set to disk unparsed: a truncated one arrives.
        "serve": NO_STUDY_UID,
    }[destination]
    return {
        copy_name(p)
        for p in FILES
        if p.name in NOT_SENDABLE or p.name in refused or _is_dicomdir(p)
    }


# --- the copies ----------------------------------------------------------------------------------


def copy_name(path: Path) -> str:
    return f"{path.parent.name}__{path.name}"


def _read(path: Path, **kwargs: object) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pydicom-files")
    for path in FILES:
        shutil.copyfile(path, out / copy_name(path))
    return out


def _uid(ds: Dataset) -> str:
    uid = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID") or ""
    return str(uid)


def failed_names(result_stderr: str) -> set[str]:
    """The copies ``dicomnet store`` reported as failed or skipped."""
    return set(re.findall(r"^(?:failed|skipped): \S*/([^/\s:]+):", result_stderr, re.M))


def _pixels_match(original: Path, arrived: Path) -> bool:
    source, result = _read(original), _read(arrived)
    if "PixelData" not in source:
        return set(result.keys()) >= {t for t in source.keys() if t.group != 2}  # noqa: SIM118
    try:
        expected = source.pixel_array
    except Exception:
        return bool(result.PixelData == source.PixelData)  # went as it was
    values = result.pixel_array
    if original.name in WORD_ORDER and not result.file_meta.TransferSyntaxUID.endswith(".2.2"):
        # Re-encoded from big endian, Bits Allocated 32: PS3.5's 16-bit OW words, see
        # test_pixels_byteorder.py.
        expected = ((expected & 0xFFFF) << 16) | (expected >> 16)
    return values.shape == expected.shape and bool(np.array_equal(values, expected))


def check_arrivals(folder: Path, arrived: list[Path], failed: set[str], copies: list[Path]) -> None:
    """Every copy not in ``failed`` arrived: an arrival with its SOP Instance UID and its
    pixels, each arrival used once."""
    by_uid: dict[str, list[Path]] = defaultdict(list)
    for path in arrived:
        by_uid[_uid(_read(path, stop_before_pixels=True))].append(path)
    missing = []
    for copy in copies:
        if copy.name in failed:
            continue
        uid = _uid(_read(copy, stop_before_pixels=True))
        match = next((p for p in by_uid[uid] if _pixels_match(copy, p)), None)
        if match is None:
            missing.append(copy.name)
        else:
            by_uid[uid].remove(match)
    assert not missing, f"did not arrive with equal pixels: {missing}"


def _copies(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("accept_all", [False, True], ids=["uncompressed-only", "accept-all"])
def test_every_pydicom_file_reaches_storescp(
    dcmtk_storescp: Callable[..., DcmtkStorescp], folder: Path, accept_all: bool
) -> None:
    scp = dcmtk_storescp(extra=["+uf", "+xa"] if accept_all else ["+uf"])
    result = dicomnet(
        "store", "127.0.0.1", str(scp.port), str(folder), "--aec", "STORESCP", "-q", timeout=300
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    destination = "storescp+xa" if accept_all else "storescp"
    failed = failed_names(result.stderr)
    assert failed == expected_failures(destination), output
    for path in FILES:
        if path.name in NOT_SENDABLE:
            assert NOT_SENDABLE[path.name] in result.stderr
        if path.name in UNDECODABLE and not accept_all:
            assert UNDECODABLE[path.name] in result.stderr
        if _is_dicomdir(path):
            assert re.search(rf"{copy_name(path)}: not sent: .*\({DICOMDIR} in", result.stderr)
    check_arrivals(folder, sorted(scp.folder.iterdir()), failed, _copies(folder))
    if not accept_all:
        # DCMTK's dcmsend --decompress-lossy cannot decode JPEG 2000: dicomnet can.
        assert re.search(r"\d+ decompressed JPEG 2000 Image Compression -> ", result.stdout)


def test_every_pydicom_file_reaches_dicomnet_serve(
    serve: Callable[..., Serve], folder: Path, tmp_path: Path
) -> None:
    server = serve()
    copies = _copies(folder)
    # Rounds of distinct SOP Instance UIDs (dicomnet serve files an instance by its UID).
    rounds: list[list[Path]] = []
    seen: dict[str, int] = defaultdict(int)
    for copy in copies:
        uid = _uid(_read(copy, stop_before_pixels=True))
        index = seen[uid]
        seen[uid] += 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(copy)
    failed: set[str] = set()
    for number, batch in enumerate(rounds):
        result = dicomnet(
            "store", "127.0.0.1", str(server.port), *map(str, batch), "-q", timeout=300
        )
        assert "Traceback" not in result.stdout + result.stderr
        names = failed_names(result.stderr)
        failed |= names
        check_arrivals(folder, server.stored(), names, batch)
        for stored in server.stored():
            stored.unlink()  # the next round may hold the same UIDs
        assert number < 20
    assert failed == expected_failures("serve")
