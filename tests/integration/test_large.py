"""A 2 GB instance through dicomnet with bounded memory (issue 2, item 6): the client and the
server each run in their own process, and each one's peak resident set size (VmHWM) stays under
150 MB while the file arrives byte for byte.

The instance is generated in chunks (never whole in memory): a pydicom-written header, then an
OB Pixel Data element of 2,000,000,000 bytes (under the 0xFFFFFFFE element length limit) whose
every 1 MiB block carries its own index, so a lost, repeated or reordered block changes the hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.helpers import free_port, wait_for_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc"),
]

MULTIFRAME_GRAYSCALE_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
ROWS = COLUMNS = 1000
FRAMES = 2000
PIXEL_BYTES = ROWS * COLUMNS * FRAMES  # 2,000,000,000 bytes, 8 bits per pixel
BLOCK = 1 << 20
RSS_LIMIT = 150 * 1024 * 1024
DATASET_START = 132  # preamble and "DICM"; the data set follows the meta group


def _header(study_uid: str, sop_uid: str) -> bytes:
    """Meta information and every element of the data set before Pixel Data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MULTIFRAME_GRAYSCALE_BYTE_SC
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MULTIFRAME_GRAYSCALE_BYTE_SC
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "BIG001"
    ds.PatientName = "LARGE^INSTANCE"
    ds.Modality = "OT"
    ds.StudyDate = "20240102"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = FRAMES
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    # (7FE0,0010) OB, explicit VR little endian: tag, VR, 2 reserved bytes, 32-bit length
    # (PS3.5 §7.1.2).
    return out.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, PIXEL_BYTES)


def _write_instance(path: Path) -> tuple[int, str]:
    """Write the instance in 1 MiB blocks; returns the data set's offset and its SHA-256."""
    study_uid, sop_uid = generate_uid(), generate_uid()
    header = _header(study_uid, sop_uid)
    (meta_length,) = struct.unpack_from("<I", header, DATASET_START + 8)
    offset = DATASET_START + 12 + meta_length
    digest = hashlib.sha256(header[offset:])
    block = bytearray(bytes(range(256)) * (BLOCK // 256))
    with open(path, "wb", buffering=0) as f:
        f.write(header)
        remaining = PIXEL_BYTES
        index = 0
        while remaining:
            struct.pack_into("<Q", block, 0, index)
            part = memoryview(block)[: min(BLOCK, remaining)]
            f.write(part)
            digest.update(part)
            remaining -= len(part)
            index += 1
    return offset, digest.hexdigest()


def _dataset_digest(path: Path) -> tuple[int, str]:
    """SHA-256 of a Part 10 file's data set (after its meta group), read in chunks."""
    with open(path, "rb") as f:
        head = f.read(DATASET_START + 12)
        assert head[128:132] == b"DICM", f"{path} is not a Part 10 file"
        (meta_length,) = struct.unpack_from("<I", head, DATASET_START + 8)
        f.seek(DATASET_START + 12 + meta_length)
        digest = hashlib.sha256()
        size = 0
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident set size so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from dicomnet import DicomClient

    async def main() -> int:
        async with DicomClient(
            "127.0.0.1", int(sys.argv[1]), "BIGSCU", "DICOMNET", dimse_timeout=120
        ) as client:
            return await client.c_store(sys.argv[2])

    status = asyncio.run(main())
    with open("/proc/self/status") as f:
        hwm = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmHWM:"))
    print(json.dumps({"status": status, "peak_rss": hwm}), flush=True)
    """
)


def test_two_gigabyte_instance_with_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.dcm"
    store = tmp_path / "store"
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    try:
        offset, expected = _write_instance(source)
        expected_size = source.stat().st_size - offset
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicomnet.cli.main",
                "serve",
                "--port",
                str(port),
                "--storage",
                str(store),
                "--no-fsync",
                "-q",
            ],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port, server)
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        client = subprocess.run(
            [sys.executable, str(script), str(port), str(source)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        server_log = (tmp_path / "server.log").read_text(errors="replace")
        assert client.returncode == 0, client.stdout + client.stderr + server_log
        result = json.loads(client.stdout.strip().splitlines()[-1])
        assert result["status"] == 0, client.stderr
        # The server answers success only once the file is in place; it is still running,
        # so its VmHWM covers the whole transfer.
        server_peak = _peak_rss(server.pid)
        client_peak = int(result["peak_rss"])
        stored = list(store.rglob("*.dcm"))
        assert len(stored) == 1, stored
        size, got = _dataset_digest(stored[0])
        assert size == expected_size
        assert got == expected
        assert client_peak < RSS_LIMIT, f"client peak RSS {client_peak / 2**20:.0f} MiB"
        assert server_peak < RSS_LIMIT, f"server peak RSS {server_peak / 2**20:.0f} MiB"
        print(
            f"2 GB instance: {time.monotonic() - started:.1f} s in all; peak RSS client "
            f"{client_peak / 2**20:.0f} MiB, server {server_peak / 2**20:.0f} MiB"
        )
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()
        # Four gigabytes of test files are not worth keeping between runs.
        for big in [source, *store.rglob("*.dcm")]:
            big.unlink(missing_ok=True)
        for leftover in store.rglob(".dicomnet-*.part"):
            leftover.unlink(missing_ok=True)
