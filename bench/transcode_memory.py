"""The 1 GiB frame-by-frame case of issue 10: a 2048-frame 512x512x16-bit instance (1 GiB of
pixels) in JPEG 2000 lossless, decompressed to Explicit VR Little Endian by
``dicomnet.pixels.transcode_file`` in a child process; prints seconds, frames/s and the child's
peak RSS (the target is under 300 MB).

    python bench/transcode_memory.py [--frames 2048] [--distinct 8] [--keep DIR] [--send]

With ``--send``, the same file is then sent by ``dicomnet store`` to DCMTK's storescp accepting
only uncompressed syntaxes (``--ignore``: received, not written), so it is decompressed on the
way; prints the seconds and the peak RSS of ``dicomnet store``'s main process and of its codec
worker (read from /proc while they run: VmHWM only grows, the last reading is the peak).

The input is made here: ``--distinct`` different frames are encoded once and repeated (decoding
work is the same for every frame, so the figure is that of 2048 distinct ones), written with a
Basic Offset Table, header first, never held in memory whole.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from dicomnet.pixels import transcode_file
started = time.perf_counter()
result = transcode_file(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - started, "frames": result.frames,
                  "bytes_out": result.bytes_out,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_input(path: Path, frames: int, distinct: int) -> int:
    import numpy as np
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels.encoders.base import get_encoder
    from pydicom.uid import JPEG2000Lossless, generate_uid

    from dicomnet.dataset import encode_dataset
    from dicomnet.sinks import file_meta_bytes

    rows = columns = 512
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:rows, 0:columns]
    encoder = get_encoder(JPEG2000Lossless)
    options = dict(
        rows=rows,
        columns=columns,
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=12,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
    )
    codestreams = []
    for n in range(distinct):
        image = (np.sin((x + 7 * n) / 23) + np.cos((y - 5 * n) / 31)) * 900 + 2048
        image = np.clip(image + rng.normal(0, 30, image.shape), 0, 4095).astype(np.uint16)
        cs = encoder.encode(image, **options)
        codestreams.append(cs + b"\x00" * (len(cs) % 2))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class, uid = "1.2.840.10008.5.1.4.1.1.2.1", generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "BIG", "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    sizes = [len(codestreams[i % distinct]) for i in range(frames)]
    offsets, position = [], 0
    for size in sizes:
        offsets.append(position)
        position += 8 + size
    with path.open("wb") as f:
        f.write(file_meta_bytes(sop_class, uid, JPEG2000Lossless))
        f.write(encode_dataset(ds, JPEG2000Lossless))
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
        f.write(struct.pack("<HHI", 0xFFFE, 0xE000, 4 * frames))
        f.write(struct.pack(f"<{frames}I", *offsets))
        for i in range(frames):
            cs = codestreams[i % distinct]
            f.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(cs)))
            f.write(cs)
        f.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return rows * columns * 2 * frames


def _peak_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc's parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def send(src: Path, raw: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers import ENV, dcmtk, dicomnet_cli
    from tests.helpers import free_port, wait_for_port

    port = free_port()
    scp = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "STORESCP", "--ignore", "-pdu", "131072", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        wait_for_port(port, scp)  # type: ignore[arg-type]
        started = time.perf_counter()
        client = subprocess.Popen(
            [dicomnet_cli(), "store", "-q", "127.0.0.1", str(port), str(src)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=ENV,
            text=True,
        )
        peaks: dict[int, float] = {}
        deadline = started + 1800
        while client.poll() is None and time.perf_counter() < deadline:
            for pid in [client.pid, *_descendants(client.pid)]:
                peak = _peak_mb(pid)
                if peak is not None:
                    peaks[pid] = max(peaks.get(pid, 0.0), peak)
            time.sleep(0.05)
        output = client.communicate(timeout=60)[0]
        seconds = time.perf_counter() - started
    finally:
        scp.terminate()
        scp.wait(30)
    if client.returncode != 0:
        raise SystemExit(f"dicomnet store failed ({client.returncode}): {output}")
    main_peak = peaks.pop(client.pid, 0.0)
    workers = sorted(peaks.values(), reverse=True)
    print(
        f"dicomnet store (decompressed to an uncompressed-only storescp): {seconds:.1f} s, "
        f"{raw / 2**20 / seconds:.0f} MiB/s of pixels; peak RSS: main process {main_peak:.0f} MB, "
        f"largest helper process (codec worker or forkserver) "
        f"{workers[0] if workers else 0:.0f} MB"
    )
    print("  " + " | ".join(line for line in output.splitlines() if line.strip()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2048)
    parser.add_argument("--distinct", type=int, default=8)
    parser.add_argument("--target", default="explicit-le")
    parser.add_argument("--keep", type=Path, help="folder for the files (kept)")
    parser.add_argument("--send", action="store_true", help="also send it with dicomnet store")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dicomnet-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / "big-j2k.dcm", folder / "big-out.dcm"
    started = time.perf_counter()
    raw = make_input(src, args.frames, args.distinct)
    print(
        f"input: {src.stat().st_size / 2**20:.0f} MiB JPEG 2000 lossless, {args.frames} frames, "
        f"{raw / 2**30:.2f} GiB of pixels (made in {time.perf_counter() - started:.0f} s)"
    )
    env = dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(dst), args.target],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        f"transcode to {args.target}: {figures['seconds']:.1f} s, "
        f"{figures['frames'] / figures['seconds']:.0f} frames/s, "
        f"{raw / 2**20 / figures['seconds']:.0f} MiB/s of pixels, "
        f"output {figures['bytes_out'] / 2**20:.0f} MiB, "
        f"peak RSS {max(child_peak, figures['peak_rss_kib']) / 1024:.0f} MB"
    )
    dst.unlink(missing_ok=True)
    if args.send:
        send(src, raw)
    if args.keep is None:
        for p in (src, dst):
            p.unlink(missing_ok=True)
        folder.rmdir()


if __name__ == "__main__":
    main()
