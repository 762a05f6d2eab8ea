"""dicomnet against DCMTK over 127.0.0.1, both directions: echoscu and storescu into the dicomnet
server (and the seed example SCP), dicomnet's client into storescp."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnet import DicomClient, Status
from dicomnet.services.storage import StorageService
from tests.helpers import (
    dcmtk_env,
    echo_statuses,
    free_port,
    require_tool,
    run,
    wait_for_port,
    write_ct,
)

pytestmark = pytest.mark.interop

# pydicom's test files, with the storescu option that proposes each one's own transfer syntax.
TESTFILES = {
    "CT_small.dcm": [],
    "MR_small.dcm": [],
    "rtplan.dcm": [],
    "JPEG2000.dcm": ["-xw"],
    "SC_rgb_rle.dcm": ["-xr"],
    "MR_small_jpeg_ls_lossless.dcm": ["-xt"],
    "JPEG-lossy.dcm": ["-xx"],
    "MR_small_bigendian.dcm": ["-xb"],
    "image_dfl.dcm": ["-xd"],
    "reportsi.dcm": [],
}


def test_echoscu_against_dicomnet(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = require_tool("echoscu")
    server = threaded_server(StorageService.factory(tmp_path, fsync=False))
    result = run([exe, "-v", "-aec", "DICOMNET", "127.0.0.1", str(server.port)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert echo_statuses(result) == ["Success"], result.stdout + result.stderr


def test_echoscu_repeat(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = require_tool("echoscu")
    server = threaded_server(StorageService.factory(tmp_path, fsync=False))
    result = run([exe, "-v", "--repeat", "50", "127.0.0.1", str(server.port)])
    assert result.returncode == 0, result.stdout + result.stderr
    # echoscu's exit status does not reflect the C-ECHO status: count the answers.
    assert echo_statuses(result) == ["Success"] * 50, result.stdout + result.stderr


def test_storescu_into_dicomnet(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = require_tool("storescu")
    store = tmp_path / "store"
    server = threaded_server(StorageService.factory(store, fsync=True))
    src = tmp_path / "in"
    datasets = [write_ct(src / f"{i}.dcm", rows=64, columns=64) for i in range(10)]
    result = run(
        [exe, "-v", "-aec", "DICOMNET", "+sd", "127.0.0.1", str(server.port), str(src)],
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Association Accepted" in output, output
    for ds in datasets:
        out = store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert out.exists(), output
        assert dcmread(out).PixelData == ds.PixelData


def test_storescu_all_test_files_with_matching_syntaxes(threaded_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exe = require_tool("storescu")
    store = tmp_path / "store"
    server = threaded_server(StorageService.factory(store, fsync=False))
    for name, option in TESTFILES.items():
        path = str(get_testdata_file(name))
        ds = dcmread(path, stop_before_pixels=True)
        result = run([exe, "-aec", "DICOMNET", *option, "127.0.0.1", str(server.port), path])
        assert result.returncode == 0, name + result.stdout + result.stderr
        out = store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert out.exists(), name
        if option:  # compressed: storescu sends it as it is, and we keep it as it came
            assert dcmread(out).file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        sent, got = dcmread(path), dcmread(out)
        assert got.get("PixelData") == sent.get("PixelData")
        assert got.SOPInstanceUID == sent.SOPInstanceUID


def test_dicomnet_client_into_storescp(dcmtk_storescp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    scp = dcmtk_storescp()
    src = tmp_path / "in"
    datasets = [write_ct(src / f"{i}.dcm", rows=128, columns=128) for i in range(5)]

    async def go() -> list[int]:
        async with DicomClient("127.0.0.1", scp.port, "DICOMNET", "STORESCP") as client:
            assert await client.c_echo() == Status.SUCCESS
            return [await client.c_store(src / f"{i}.dcm") for i in range(5)]

    assert asyncio.run(go()) == [0] * 5
    received = {dcmread(p).SOPInstanceUID: dcmread(p) for p in scp.folder.iterdir()}
    for ds in datasets:
        assert received[ds.SOPInstanceUID].PixelData == ds.PixelData


def test_seed_example_scp_with_dcmtk(tmp_path: Path) -> None:
    echoscu = require_tool("echoscu")
    storescu = require_tool("storescu")
    port = free_port()
    example = Path(__file__).resolve().parents[2] / "examples" / "store_scp.py"
    proc = subprocess.Popen(
        [sys.executable, str(example), str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dcmtk_env(),
    )
    try:
        wait_for_port(port, proc)  # type: ignore[arg-type]
        wrong = run([echoscu, "-aec", "OTHER", "127.0.0.1", str(port)])
        assert wrong.returncode != 0
        assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr
        ok = run([echoscu, "-v", "-aec", "STORESCP", "127.0.0.1", str(port)])
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert echo_statuses(ok) == ["Success"], ok.stdout + ok.stderr
        ds = write_ct(tmp_path / "in" / "a.dcm")
        sent = run(
            [storescu, "-aec", "STORESCP", "127.0.0.1", str(port), str(tmp_path / "in" / "a.dcm")]
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert (tmp_path / "DICOM" / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm").exists()
    finally:
        proc.terminate()
        proc.wait(10)
