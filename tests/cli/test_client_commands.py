"""``dicomnet echo`` and ``dicomnet store`` as subprocesses, against DCMTK's storescp and against
``dicomnet serve``: statuses, round-trip times, summaries, exit codes, the files on the other
side byte for byte, skipped non-DICOM files, rejected AE titles and the progress bar on a
terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.cli.conftest import DICOMNET, IN_SUBFOLDER, Mixed, Serve, dataset_bytes, dicomnet
from tests.interop.conftest import DcmtkStorescp

DEFLATED = "1.2.840.10008.1.2.1.99"
SUMMARY = re.compile(
    r"sent (\d+) of (\d+) files \([\d.]+ MB\) in [\d.]+ s \([\d.]+ files/s, [\d.]+ MB/s\); "
    r"(\d+) warnings, (\d+) failed, (\d+) skipped \(not DICOM\)"
)


def summary(stdout: str) -> tuple[int, int, int, int, int]:
    """(sent, total, warnings, failed, skipped) from the last line of ``dicomnet store``."""
    match = SUMMARY.search(stdout)
    assert match, stdout
    sent, total, warnings, failed, skipped = map(int, match.groups())
    return sent, total, warnings, failed, skipped


# --- against DCMTK storescp -----------------------------------------------------------------------


@pytest.mark.interop
def test_echo_against_storescp(dcmtk_storescp: Callable[..., DcmtkStorescp]) -> None:
    scp = dcmtk_storescp()
    result = dicomnet("echo", "127.0.0.1", str(scp.port), "--aec", "STORESCP", "--count", "3")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("C-ECHO")]
    assert len(lines) == 3
    for i, line in enumerate(lines, 1):
        assert re.match(
            rf"C-ECHO {i}/3 to STORESCP@127\.0\.0\.1:\d+: 0x0000 Success .* in [\d.]+ ms$", line
        ), line
    assert "3 echoes in" in result.stdout and "0 failed" in result.stdout


@pytest.mark.interop
def test_store_mixed_folder_into_storescp(
    dcmtk_storescp: Callable[..., DcmtkStorescp], mixed: Mixed
) -> None:
    """storescp (+xa: every transfer syntax it knows) stores them all. rtplan.dcm's meta
    information names another SOP Instance UID than its data set: the C-STORE names the data
    set's (DCMTK answers 0xA900 to a command that does not match the data set). The deflated
    file has an odd length and is padded on the wire (PS3.5 §A.5)."""
    scp = dcmtk_storescp(extra=["+xa"])
    result = dicomnet(
        "store", "127.0.0.1", str(scp.port), str(mixed.folder), "-r", "--aec", "STORESCP"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == (8, 8, 0, 0, 2)
    assert "rtplan.dcm: the File Meta Information names" in result.stderr
    for bad in mixed.not_dicom:
        assert f"skipped: {bad}" in result.stderr
    received = {str(dcmread(p).SOPInstanceUID) for p in scp.folder.iterdir()}
    for name, info in mixed.files.items():
        assert str(dcmread(info.path).SOPInstanceUID) in received, name
    assert "converted" not in result.stdout  # +xa: every file went in its own syntax


@pytest.mark.interop
def test_store_decompresses_for_a_peer_that_accepts_only_uncompressed(
    dcmtk_storescp: Callable[..., DcmtkStorescp], mixed: Mixed
) -> None:
    """Plain storescp accepts only uncompressed syntaxes: the compressed files are decompressed
    (off the event loop), the summary counts them, the pixels arrive unchanged."""
    scp = dcmtk_storescp()
    files = [str(mixed.folder / n) for n in ("CT_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm")]
    result = dicomnet("store", "127.0.0.1", str(scp.port), *files, "--aec", "STORESCP")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == (3, 3, 0, 0, 0)
    assert re.search(
        r"stored: \S*JPEG2000\.dcm \(decompressed JPEG 2000 Image Compression -> "
        r"Explicit VR Little Endian\)",
        result.stdout,
    ), result.stdout
    assert "converted 2 of 3 files: " in result.stdout
    assert "1 decompressed RLE Lossless -> Explicit VR Little Endian" in result.stdout
    received = {str(dcmread(p).SOPInstanceUID): p for p in scp.folder.iterdir()}
    for name in ("JPEG2000.dcm", "MR_small_RLE.dcm"):
        original = dcmread(mixed.folder / name)
        arrived = dcmread(received[str(original.SOPInstanceUID)])
        assert arrived.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert arrived.pixel_array.tolist() == original.pixel_array.tolist(), name


@pytest.mark.interop
def test_store_fails_when_the_peer_refuses_the_transfer_syntaxes(
    dcmtk_storescp: Callable[..., DcmtkStorescp], mixed: Mixed
) -> None:
    """--propose own (dcmsend --decompress-never): plain storescp accepts only uncompressed
    syntaxes, so the compressed files fail with the reason, the others are stored, exit 1."""
    scp = dcmtk_storescp()
    files = [str(mixed.folder / n) for n in ("CT_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm")]
    result = dicomnet(
        "store", "127.0.0.1", str(scp.port), *files, "--aec", "STORESCP", "--propose", "own"
    )
    assert result.returncode == 1
    assert summary(result.stdout) == (1, 3, 0, 2, 0)
    assert "failed: " + files[1] + ": not sent: the peer accepted no presentation context" in (
        result.stderr
    )
    assert f"failed: {files[2]}: not sent: the peer accepted no presentation context" in (
        result.stderr
    )
    assert "(Secondary Capture Image Storage in JPEG 2000 Image Compression)" in result.stderr


# --- against dicomnet serve -----------------------------------------------------------------------


def test_echo_against_serve(serve: Callable[..., Serve]) -> None:
    server = serve()
    result = dicomnet("echo", "127.0.0.1", str(server.port), "-c", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("0x0000 Success") == 2


def test_store_mixed_folder_into_serve_byte_for_byte(
    serve: Callable[..., Serve], mixed: Mixed
) -> None:
    server = serve()
    result = dicomnet("store", "127.0.0.1", str(server.port), str(mixed.folder), "--recursive")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == (8, 8, 0, 0, 2)
    for bad in mixed.not_dicom:
        assert f"skipped: {bad}: not a DICOM Part 10 file" in result.stderr
    # One quiet line per file when stdout is not a terminal.
    assert result.stdout.count("stored: ") == 8
    stored = server.stored()
    assert len(stored) == 8
    for name, info in mixed.files.items():
        ds = dcmread(info.path, stop_before_pixels=True)
        # The C-STORE names the data set's SOP Instance UID (rtplan.dcm's meta disagrees).
        path = (
            server.storage
            / str(ds.StudyInstanceUID)
            / str(ds.SeriesInstanceUID)
            / f"{ds.SOPInstanceUID}.dcm"
        )
        assert path.is_file(), name
        expected = dataset_bytes(info.path)
        if info.transfer_syntax == DEFLATED and len(expected) % 2:
            expected += b"\x00"  # padded to even length on the wire (PS3.5 §A.5)
        assert dataset_bytes(path) == expected, name
        meta = dcmread(path, stop_before_pixels=True).file_meta
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.TransferSyntaxUID == info.transfer_syntax
    assert "association accepted" in server.log
    assert server.log.count(" stored ") == 8  # a log line per instance


def test_store_without_recursive_skips_subfolders(
    serve: Callable[..., Serve], mixed: Mixed
) -> None:
    server = serve()
    result = dicomnet("store", "127.0.0.1", str(server.port), str(mixed.folder), "-q")
    assert result.returncode == 0, result.stderr
    top = len(mixed.files) - len(IN_SUBFOLDER)
    assert summary(result.stdout) == (top, top, 0, 0, 2)
    assert "stored: " not in result.stdout  # --quiet: the summary only
    assert len(server.stored()) == top


def test_store_only_non_dicom_files_fails(serve: Callable[..., Serve], mixed: Mixed) -> None:
    server = serve()
    result = dicomnet("store", "127.0.0.1", str(server.port), *map(str, mixed.not_dicom))
    assert result.returncode == 1
    assert "nothing to send: no DICOM file among 2 files" in result.stderr


def test_store_missing_path_is_a_usage_error(mixed: Mixed) -> None:
    result = dicomnet("store", "127.0.0.1", "11112", str(mixed.folder / "missing.dcm"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_store_to_nobody_fails_clearly(mixed: Mixed) -> None:
    from tests.helpers import free_port

    port = free_port()  # nothing listens there
    result = dicomnet("store", "127.0.0.1", str(port), str(mixed.folder / "CT_small.dcm"))
    assert result.returncode == 2
    assert f"error: cannot connect to 127.0.0.1:{port}" in result.stderr


def test_rejected_calling_ae_title(serve: Callable[..., Serve], mixed: Mixed) -> None:
    server = serve("--allow-ae", "GOOD", "--allow-ae", "ALSO-GOOD")
    ct = str(mixed.folder / "CT_small.dcm")
    result = dicomnet("store", "127.0.0.1", str(server.port), ct, "--aet", "INTRUDER")
    assert result.returncode == 2
    assert "rejected" in result.stderr
    assert "calling AE title not recognized" in result.stderr
    echo = dicomnet("echo", "127.0.0.1", str(server.port))  # default calling AE DICOMNET
    assert echo.returncode == 2 and "calling AE title not recognized" in echo.stderr
    assert server.stored() == []
    ok = dicomnet("store", "127.0.0.1", str(server.port), ct, "--aet", "ALSO-GOOD")
    assert ok.returncode == 0, ok.stderr
    assert len(server.stored()) == 1


def test_progress_bar_on_a_terminal(serve: Callable[..., Serve], mixed: Mixed) -> None:
    """On a terminal: a rich progress bar with files, MB and MB/s instead of a line per file."""
    server = serve()
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*DICOMNET, "store", "127.0.0.1", str(server.port), str(mixed.folder), "-r"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(terminal)
        terminal = -1
        out = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", out).decode("utf-8", "replace")
    assert "8/8 files" in text, text
    assert re.search(r"[\d.]+/[\d.]+ [kM]B", text), text
    assert re.search(r"[\d.]+ [kM]B/s", text), text
    assert "stored: " not in text
    assert summary(text) == (8, 8, 0, 0, 2)


def test_store_needing_over_128_contexts_uses_two_associations(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    """65 storage SOP classes x 2 transfer syntaxes = 130 presentation contexts: the files go in
    two associations (at most 128 contexts each, PS3.8 §9.3.2.2), all of them stored."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    from dicomnet.uids import storage_sop_classes
    from tests.helpers import make_ct

    classes = sorted(storage_sop_classes())[:65]
    assert len(classes) == 65
    folder = tmp_path / "many"
    folder.mkdir()
    for i, sop_class in enumerate(classes):
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ds = make_ct(rows=4, columns=4)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
            ds.file_meta.TransferSyntaxUID = ts
            ds.save_as(folder / f"{i:02d}-{ts[-1]}.dcm", enforce_file_format=True)
    server = serve()
    result = dicomnet("store", "127.0.0.1", str(server.port), str(folder), "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == (130, 130, 0, 0, 0)
    assert len(server.stored()) == 130
    accepted = re.findall(r"association accepted: (\d+) of (\d+) presentation contexts", server.log)
    assert sorted(accepted) == [("128", "128"), ("2", "2")]


# --- transcoding options --------------------------------------------------------------------------


@pytest.mark.interop
def test_store_compresses_to_the_transfer_syntax_asked_for(
    dcmtk_storescp: Callable[..., DcmtkStorescp], mixed: Mixed
) -> None:
    """--transfer-syntax jpeg-ls-lossless (storescu's -xs family, dcmsend has none): proposed
    first and chosen when the peer accepts it; the pixels survive; a data set without pixels
    goes in its own syntax."""
    pytest.importorskip("numpy")
    from dicomnet.pixels import can_encode

    if not can_encode("jpeg-ls-lossless"):
        pytest.skip("the codecs extra is not installed")
    scp = dcmtk_storescp(extra=["+xa"])
    files = [str(mixed.folder / n) for n in ("CT_small.dcm", "MR_small_RLE.dcm")]
    files.append(str(mixed.folder / "sub" / "reportsi.dcm"))
    result = dicomnet(
        "store", "127.0.0.1", str(scp.port), *files, "--aec", "STORESCP", "-x", "jpeg-ls-lossless"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 compressed Explicit VR Little Endian -> JPEG-LS Lossless" in result.stdout
    assert "1 transcoded RLE Lossless -> JPEG-LS Lossless" in result.stdout
    received = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.folder.iterdir()}
    for name in ("CT_small.dcm", "MR_small_RLE.dcm"):
        original = dcmread(mixed.folder / name)
        arrived = received[str(original.SOPInstanceUID)]
        assert arrived.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80", name
        assert "LossyImageCompression" not in arrived, name
        assert arrived.pixel_array.tolist() == original.pixel_array.tolist(), name
    report = dcmread(mixed.folder / "sub" / "reportsi.dcm")
    assert (
        received[str(report.SOPInstanceUID)].file_meta.TransferSyntaxUID
        == report.file_meta.TransferSyntaxUID
    )


def test_lossy_transfer_syntax_needs_allow_lossy(mixed: Mixed) -> None:
    ct = str(mixed.folder / "CT_small.dcm")
    result = dicomnet("store", "127.0.0.1", "11112", ct, "--transfer-syntax", "jpeg-baseline")
    assert result.returncode == 2
    assert "is lossy: add --allow-lossy" in result.stderr
    unknown = dicomnet("store", "127.0.0.1", "11112", ct, "-x", "jpeg-xl")
    assert unknown.returncode == 2 and "unknown transfer syntax 'jpeg-xl'" in unknown.stderr


@pytest.mark.interop
def test_lossy_compression_marks_the_copy_and_refuses_lossy_input_unless_asked_twice(
    dcmtk_storescp: Callable[..., DcmtkStorescp], mixed: Mixed
) -> None:
    """PS3.3 C.7.6.1.1.5: a lossy copy says so and is a new instance; an image that was lossy
    already is not compressed lossy again without --allow-lossy-to-lossy (it goes as it is)."""
    pytest.importorskip("numpy")
    from dicomnet.pixels import can_encode

    if not can_encode("jpeg-ls-near-lossless"):
        pytest.skip("the codecs extra is not installed")
    scp = dcmtk_storescp(extra=["+xa"])
    ct = mixed.folder / "CT_small.dcm"
    jpeg = mixed.folder / "SC_rgb_jpeg_dcmtk.dcm"
    result = dicomnet(
        "store",
        "127.0.0.1",
        str(scp.port),
        str(ct),
        str(jpeg),
        "--aec",
        "STORESCP",
        "-x",
        "jpeg-ls-near-lossless",
        "--allow-lossy",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        r"stored: \S*CT_small\.dcm \(compressed .*, lossy: new SOP Instance UID ", result.stdout
    )
    original = dcmread(ct)
    arrived = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.folder.iterdir()}
    assert str(original.SOPInstanceUID) not in arrived  # a new instance
    [copy] = [ds for ds in arrived.values() if ds.Modality == "CT"]
    assert copy.LossyImageCompression == "01"
    assert copy.LossyImageCompressionMethod == "ISO_14495_1"
    assert float(copy.LossyImageCompressionRatio) > 1
    difference = copy.pixel_array.astype(int) - original.pixel_array.astype(int)
    assert 0 < abs(difference).max() <= 2  # NEAR=2
    # The JPEG Baseline image was lossy already: sent as it was.
    jpeg_uid = str(dcmread(jpeg).SOPInstanceUID)
    assert arrived[jpeg_uid].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"


@pytest.mark.interop
def test_store_survives_a_peer_ending_the_association_while_it_converts(
    dcmtk_storescp: Callable[..., DcmtkStorescp], tmp_path: Path
) -> None:
    """DCMTK's tools end an association that is silent for --socket-timeout seconds (60 by
    default): a conversion that takes longer (the 1 GiB multi-frame case) must not lose the
    file. The converted file is sent on a new association, converted once."""
    pytest.importorskip("numpy")
    from pydicom.encaps import encapsulate, generate_frames

    from dicomnet.pixels import can_encode, transcode_file
    from tests.helpers import make_ct, write_ct

    if not can_encode("jpeg2000-lossless"):
        pytest.skip("the codecs extra is not installed")
    # 192 frames of 512x512 in JPEG 2000 (one frame coded once, repeated): decoding them all
    # takes 3 s or more, well over storescp's --socket-timeout 1 (so the peer's abort cannot
    # meet the start of the sending).
    one = tmp_path / "one.dcm"
    write_ct(one, rows=512, columns=512)
    transcode_file(one, tmp_path / "one-j2k.dcm", "jpeg2000-lossless")
    frame = dcmread(tmp_path / "one-j2k.dcm")
    ds = make_ct(rows=8, columns=8)
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = 192
    ds.file_meta.TransferSyntaxUID = frame.file_meta.TransferSyntaxUID
    codestream = next(generate_frames(frame.PixelData))
    ds.PixelData = encapsulate([codestream] * 192)
    ds["PixelData"].VR = "OB"
    big = tmp_path / "big-j2k.dcm"
    ds.save_as(big, enforce_file_format=True)
    expected = dcmread(tmp_path / "one.dcm").PixelData * 192
    scp = dcmtk_storescp(extra=["--socket-timeout", "1"])
    result = dicomnet("store", "127.0.0.1", str(scp.port), str(big), "--aec", "STORESCP", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ended while a data set was converted" in result.stderr
    assert "converted 1 of 1 files: 1 decompressed JPEG 2000" in result.stdout
    [arrived] = list(scp.folder.iterdir())
    assert dcmread(arrived).PixelData == expected
