"""Benchmark data, generated once with pydicom into ``bench/data/`` (git-ignored), and the check
that every received instance arrived intact.

Sets: ``ct`` (512x512x16 bit CT, 512 KB of pixels each, unique UIDs and pixels), ``small``
(8x8x16 bit, about 600 bytes each) and ``big`` (one multi-frame CT of 2048 frames, 1 GiB of pixels,
written header first and then the pixel data in chunks, so memory stays bounded).

Every generated file ends with its Pixel Data element (explicit VR little endian, defined length),
so a received copy is checked by its SOP Instance UID and the SHA-1 of its last N bytes, whatever
file meta information the receiving SCP wrote in front of the data set.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import make_ct  # noqa: E402

DATA = BENCH / "data"
# Bumped whenever what is generated changes, so an old cache is regenerated.
VERSION = "3"
CT_COUNT = 800  # 500 for the one-association rows, 8 x 100 for the concurrent ones
SMALL_COUNT = 2000
BIG_FRAMES = 2048  # 2048 x 512 KB = 1 GiB
CHUNK = 8 << 20
PIXEL_HEADER = b"\xe0\x7f\x10\x00OW\x00\x00"


@dataclass(frozen=True)
class DataSet:
    """A generated set: its files (sorted) and, per file name, (SOP Instance UID, pixel bytes,
    SHA-1 of the pixel data)."""

    name: str
    files: list[Path]
    manifest: dict[str, tuple[str, int, str]]

    def expected(self, files: list[Path]) -> dict[str, tuple[int, str]]:
        """What ``verify`` expects once ``files`` were sent: per UID, (pixel bytes, SHA-1)."""
        return {self.manifest[f.name][0]: self.manifest[f.name][1:] for f in files}

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def _save(
    path: Path, rows: int, index: int, rng: random.Random, series: tuple[str, str]
) -> tuple[str, int, str]:
    ds = make_ct(rows, rows, study_uid=series[0], series_uid=series[1])
    ds.InstanceNumber = index + 1
    pixels = rng.randbytes(rows * rows * 2)
    ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID), len(pixels), hashlib.sha1(pixels).hexdigest()


def _generate_set(name: str, count: int, rows: int, per_series: int) -> None:
    folder = DATA / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(f"dicomnet-bench-{name}")
    manifest: dict[str, tuple[str, int, str]] = {}
    series: tuple[str, str] = ("", "")
    for i in range(count):
        if i % per_series == 0:
            head = make_ct(8, 8)
            series = (str(head.StudyInstanceUID), str(head.SeriesInstanceUID))
        path = folder / f"{name}-{i:05d}.dcm"
        manifest[path.name] = _save(path, rows, i, rng, series)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _generate_big() -> None:
    """One 1 GiB multi-frame instance: pydicom writes everything before the pixel data, then
    the Pixel Data element header and value are appended chunk by chunk."""
    folder = DATA / "big"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ds = make_ct(512, 512)
    del ds.PixelData
    ds.NumberOfFrames = BIG_FRAMES
    ds.FrameIncrementPointer = 0x00180050  # Slice Thickness, a valid tag pointer for the sample
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    length = 512 * 512 * 2 * BIG_FRAMES
    digest = hashlib.sha1()
    rng = random.Random("dicomnet-bench-big")
    block = rng.randbytes(CHUNK)
    path = folder / "big-00000.dcm"
    with open(path, "wb") as f:
        f.write(head.getvalue())
        f.write(PIXEL_HEADER + struct.pack("<I", length))
        for i in range(length // CHUNK):
            # Each chunk differs (a counter in front), so a misplaced chunk changes the hash.
            chunk = struct.pack("<Q", i) + block[8:]
            digest.update(chunk)
            f.write(chunk)
    manifest = {path.name: (str(ds.SOPInstanceUID), length, digest.hexdigest())}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def ensure(log: bool = True) -> dict[str, DataSet]:
    """Generate the sets unless the cache already holds this version; return them."""
    stamp = DATA / "VERSION"
    wanted = f"{VERSION} ct={CT_COUNT} small={SMALL_COUNT} big={BIG_FRAMES}"
    if not stamp.exists() or stamp.read_text() != wanted:
        start = time.perf_counter()
        if log:
            print(f"generating benchmark data into {DATA} (once) ...", flush=True)
        DATA.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        _generate_set("ct", CT_COUNT, 512, 100)
        _generate_set("small", SMALL_COUNT, 8, 500)
        _generate_big()
        stamp.write_text(wanted)
        if log:
            print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    sets = {}
    for name in ("ct", "small", "big"):
        folder = DATA / name
        raw = json.loads((folder / "manifest.json").read_text())
        manifest = {k: (str(v[0]), int(v[1]), str(v[2])) for k, v in raw.items()}
        sets[name] = DataSet(name, sorted(folder.glob("*.dcm")), manifest)
    return sets


JLS_COUNT = 500


def _dcmtk_tool(name: str) -> str:
    """DCMTK's ``name`` (not a Python script of the same name)."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with open(candidate, "rb") as f:
                if f.read(2) != b"#!":
                    return str(candidate)
    raise SystemExit(f"DCMTK's {name} is not installed (apt-get install dcmtk)")


def ensure_jls(ct: DataSet, log: bool = True) -> DataSet:
    """The first ``JLS_COUNT`` CT of ``ct`` compressed to JPEG-LS lossless by DCMTK's
    ``dcmcjpls`` (same SOP Instance UIDs and, decoded, the same pixels), made once."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    folder = DATA / "ct-jls"
    stamp = folder / "VERSION"
    sources = ct.files[:JLS_COUNT]
    wanted = f"{VERSION} {len(sources)} {(DATA / 'VERSION').read_text()}"
    if not stamp.exists() or stamp.read_text() != wanted:
        start = time.perf_counter()
        if log:
            print(f"compressing {len(sources)} CT to JPEG-LS with dcmcjpls (once) ...", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        tool = _dcmtk_tool("dcmcjpls")

        def compress(path: Path) -> None:
            subprocess.run(
                [tool, "--encode-lossless", str(path), str(folder / path.name)],
                check=True,
                capture_output=True,
                timeout=60,
            )

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(compress, sources))
        stamp.write_text(wanted)
        if log:
            print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    files = sorted(folder.glob("*.dcm"))
    return DataSet("ct-jls", files, {f.name: ct.manifest[f.name] for f in files})


def verify_decoded(folder: Path, expected: dict[str, tuple[int, str]]) -> str | None:
    """``verify`` for instances stored in any transfer syntax: each file's pixel data is
    decoded by pydicom and its bytes hashed."""
    files = received_files(folder)
    if len(files) != len(expected):
        return f"{len(files)} files received, {len(expected)} expected"
    seen: set[str] = set()
    for path in files:
        try:
            ds = dcmread(path)
            uid = str(ds.SOPInstanceUID)
            if uid not in expected or uid in seen:
                return f"{path.name}: unexpected or repeated SOP Instance UID {uid}"
            seen.add(uid)
            length, digest = expected[uid]
            pixels = ds.pixel_array.astype("<u2").tobytes()
            if len(pixels) != length or hashlib.sha1(pixels).hexdigest() != digest:
                return f"{path.name}: decoded pixels differ from what was sent"
        except Exception as exc:
            return f"{path.name}: unreadable ({exc})"
    return None


def syntaxes(folder: Path) -> dict[str, int]:
    """How many received files are in each transfer syntax."""
    counts: dict[str, int] = {}
    for path in received_files(folder):
        ts = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        counts[ts] = counts.get(ts, 0) + 1
    return counts


def link_folder(files: list[Path], folder: Path) -> Path:
    """A folder holding exactly ``files`` (hard links), for tools that take a folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in files:
        os.link(f, folder / f.name)
    return folder


def received_files(folder: Path) -> list[Path]:
    """Every file an SCP wrote under ``folder``, skipping its hidden work folders and logs."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath) / n for n in filenames if not n.startswith(".") and not n.endswith(".log")
        )
    return found


def verify(folder: Path, expected: dict[str, tuple[int, str]]) -> str | None:
    """None when ``folder`` holds exactly the ``expected`` instances, each with its pixel data
    intact; otherwise what is wrong."""
    files = received_files(folder)
    if len(files) != len(expected):
        return f"{len(files)} files received, {len(expected)} expected"
    seen: set[str] = set()
    for path in files:
        try:
            with open(path, "rb") as f:
                uid = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                if uid not in expected:
                    return f"{path.name}: unexpected SOP Instance UID {uid}"
                if uid in seen:
                    return f"{path.name}: {uid} received twice"
                seen.add(uid)
                length, digest = expected[uid]
                size = os.fstat(f.fileno()).st_size
                f.seek(size - length - 12)
                header = f.read(12)
                explicit = PIXEL_HEADER + struct.pack("<I", length)
                implicit = PIXEL_HEADER[:4] + struct.pack("<I", length)  # implicit VR: no VR
                if header != explicit and header[4:] != implicit:
                    return f"{path.name}: Pixel Data is not the last element with {length} bytes"
                h = hashlib.sha1()
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                if h.hexdigest() != digest:
                    return f"{path.name}: pixel data differs from what was sent"
        except Exception as exc:
            return f"{path.name}: unreadable ({exc})"
    return None


def clear(folder: Path) -> None:
    """Empty an SCP's output folder between runs, keeping the folder and hidden work folders."""
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
