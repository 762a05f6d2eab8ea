"""``dicomnet serve`` as a user runs it: DCMTK's echoscu and storescu into it (also two storescu
at once), AE title checks, a TOML config file, the defaults, SIGTERM in the middle of a transfer
(the transfer finishes, or is aborted after --shutdown-timeout, and no partial or temporary file
is left), and ``--help`` of every command."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from tests.cli.conftest import DICOMNET, Mixed, Serve, dataset_bytes, dicomnet
from tests.helpers import (
    REQUIRE_PEERS,
    dcmtk_env,
    echo_statuses,
    free_port,
    require_tool,
    run,
    write_ct,
)
from tests.robustness.conftest import (
    CT_IMAGE_STORAGE,
    EXPLICIT_VR_LE,
    RawPeer,
    associate_rq,
    c_store_rq,
    ct_dataset,
    p_data,
    pdv,
    presentation_context,
    release_rq,
)


def wait_for_log(server: Serve, text: str, timeout: float = 20) -> None:
    """Wait (bounded) until the server's log has ``text``: readiness, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log:
            return
        if server.proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in the server log:\n{server.log}")


def _elements(path: Path) -> Dataset:
    """The data set without what DCMTK changes when it sends: group lengths, trailing padding
    and pixel data (byte-swapped from big endian)."""
    ds = dcmread(path)
    for elem in list(ds):
        if elem.tag.element == 0 or elem.tag in (0x7FE00010, 0xFFFCFFFC):
            del ds[elem.tag]
    return ds


# --- DCMTK tools into dicomnet serve --------------------------------------------------------------


@pytest.mark.interop
def test_echoscu_and_storescu_into_serve(serve: Callable[..., Serve], mixed: Mixed) -> None:
    echoscu = require_tool("echoscu")
    storescu = require_tool("storescu")
    server = serve()
    result = run([echoscu, "-v", "-aec", "DICOMNET", "127.0.0.1", str(server.port)])
    assert result.returncode == 0, result.stderr
    assert echo_statuses(result) == ["Success"], result.stdout + result.stderr
    # storescu proposes uncompressed syntaxes unless told which compressed one to add (-xr: RLE).
    plain = ["CT_small.dcm", "ExplVR_BigEnd.dcm", "reportsi.dcm", "rtplan.dcm"]
    calls = [([], plain), (["-xr"], ["MR_small_RLE.dcm"])]
    for options, names in calls:
        files = [str(mixed.files[name].path) for name in names]
        result = run(
            [storescu, *options, "-aec", "DICOMNET", "127.0.0.1", str(server.port), *files]
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(server.stored()) == 5
    for name in [*plain, "MR_small_RLE.dcm"]:
        info = mixed.files[name]
        # storescu takes the UID from the data set (rtplan.dcm's meta information differs).
        uid = dcmread(info.path, stop_before_pixels=True).SOPInstanceUID
        (path,) = server.storage.rglob(f"{uid}.dcm")
        # DCMTK re-encodes what it sends (group lengths, big endian to little): same elements.
        assert _elements(path) == _elements(info.path), name
    assert "STORESCU->DICOMNET" in server.log


@pytest.mark.interop
def test_storescu_with_an_unknown_calling_ae_is_rejected(
    serve: Callable[..., Serve], mixed: Mixed
) -> None:
    storescu = require_tool("storescu")
    server = serve("--allow-ae", "MODALITY1")
    ct = str(mixed.files["CT_small.dcm"].path)
    result = run([storescu, "-aet", "INTRUDER", "127.0.0.1", str(server.port), ct])
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
    assert "calling AE title not recognized" in server.log
    assert server.stored() == []
    result = run([storescu, "-aet", "MODALITY1", "127.0.0.1", str(server.port), ct])
    assert result.returncode == 0, result.stderr
    assert len(server.stored()) == 1


@pytest.mark.interop
def test_two_storescu_at_once_both_land_completely(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    server = serve()
    folders = [tmp_path / "a", tmp_path / "b"]
    sent: dict[str, bytes] = {}
    for n, folder in enumerate(folders):
        for i in range(40):
            ds = write_ct(folder / f"{i:03d}.dcm", rows=128, columns=128, patient_id=f"P{n}")
            sent[str(ds.SOPInstanceUID)] = dataset_bytes(folder / f"{i:03d}.dcm")
    _storescu_at_once(storescu, server.port, folders, "SENDER")
    stored = server.stored()
    assert len(stored) == 80
    for path in stored:
        assert dataset_bytes(path) == sent[path.stem]
    assert "SENDER0->" in server.log and "SENDER1->" in server.log
    assert server.stop() == 0
    assert server.temporary_files() == []
    assert _index_rows_and_state(server.storage) == (80, "clean")


# --- SIGTERM during a transfer ---------------------------------------------------------------------

STUDY, SERIES, SOP = (
    "1.2.826.0.1.3680043.10.543.7.1",
    "1.2.826.0.1.3680043.10.543.7.2",
    ("1.2.826.0.1.3680043.10.543.7.3"),
)
PIXELS = 1 << 20
FRAGMENT = 16000  # well under any max PDU length


def _big_dataset() -> bytes:
    """A CT data set with 1 MiB of pixel data (Explicit VR Little Endian, PS3.5 §7.1.2)."""
    header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, PIXELS)
    pixels = bytes(range(256)) * (PIXELS // 256)
    return ct_dataset(SOP, STUDY, SERIES) + header + pixels


def _fragments(data: bytes, *, last: bool) -> list[bytes]:
    """P-DATA-TF PDUs carrying ``data`` on context 1; the final one marked last when asked."""
    pieces = [data[i : i + FRAGMENT] for i in range(0, len(data), FRAGMENT)]
    return [
        p_data(pdv(1, piece, command=False, last=last and i == len(pieces) - 1))
        for i, piece in enumerate(pieces)
    ]


async def _start_transfer(server: Serve, data: bytes) -> RawPeer:
    """Associate, send the C-STORE-RQ and the first part of the data set; return once the
    server has written it to its temporary file."""
    peer = await RawPeer.connect(server.port)
    await peer.associate(
        associate_rq(
            [presentation_context(1, CT_IMAGE_STORAGE, EXPLICIT_VR_LE)],
            calling=b"SLOWSCU".ljust(16),
        )
    )
    await peer.send(p_data(pdv(1, c_store_rq(SOP), command=True, last=True)))
    for pdu in _fragments(data[: len(data) // 2], last=False):
        await peer.send(pdu)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        parts = [p for p in server.storage.rglob("*.part") if p.stat().st_size > 128 << 10]
        if parts:
            return peer
        await asyncio.sleep(0.02)
    raise AssertionError("the server wrote nothing of the transfer to a temporary file")


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


async def test_sigterm_lets_a_running_transfer_finish(serve: Callable[..., Serve]) -> None:
    server = serve("--shutdown-timeout", "30")
    data = _big_dataset()
    peer = await _start_transfer(server, data)
    try:
        server.send(signal.SIGTERM)
        wait_for_log(server, "stopping:")
        assert _refused(server.port)  # no new associations while stopping
        for pdu in _fragments(data[len(data) // 2 :], last=True):
            await peer.send(pdu)
        rsp = await peer.read_message()
        assert struct.unpack("<H", rsp[0x00000900])[0] == 0x0000  # Success
        await peer.send(release_rq())
        assert (await peer.read_pdu()).type == 0x06  # A-RELEASE-RP
    finally:
        await peer.aclose()
    assert server.wait(30) == 0
    (path,) = server.stored()
    assert path == server.storage / STUDY / SERIES / f"{SOP}.dcm"
    assert dataset_bytes(path) == data
    assert server.temporary_files() == []


async def test_sigterm_aborts_a_stalled_transfer_without_a_partial_file(
    serve: Callable[..., Serve],
) -> None:
    server = serve("--shutdown-timeout", "0.5")
    peer = await _start_transfer(server, _big_dataset())
    try:
        server.send(signal.SIGTERM)
        wait_for_log(server, "stopping:")
        abort = await peer.read_pdu(timeout=20)
        assert abort.type == 0x07  # A-ABORT after the shutdown timeout
    finally:
        await peer.aclose()
    assert server.wait(30) == 0
    assert server.stored() == []
    assert server.temporary_files() == []
    assert not (server.storage / ".incoming").exists()


async def test_second_signal_aborts_at_once(serve: Callable[..., Serve]) -> None:
    server = serve()  # default shutdown timeout: 10 s
    peer = await _start_transfer(server, _big_dataset())
    try:
        server.send(signal.SIGINT)
        wait_for_log(server, "stopping:")
        started = time.monotonic()
        server.send(signal.SIGINT)
        assert (await peer.read_pdu(timeout=20)).type == 0x07
        assert time.monotonic() - started < 8
    finally:
        await peer.aclose()
    assert server.wait(30) == 0
    assert "second signal: aborting" in server.log
    assert server.stored() == [] and server.temporary_files() == []


# --- a crash, and two servers on one storage --------------------------------------------------------


def _partial_files(storage: Path) -> list[Path]:
    """Temporary files with data in them (the pools' pre-created files are empty)."""
    return [p for p in storage.rglob("*.part") if p.stat().st_size > 0]


async def test_a_restart_removes_what_a_killed_server_left(serve: Callable[..., Serve]) -> None:
    """kill -9 in the middle of a transfer leaves the half-received file; the next start on the
    same storage removes it (and its folder) before it listens."""
    server = serve()
    peer = await _start_transfer(server, _big_dataset())
    try:
        (part,) = _partial_files(server.storage)
        server.send(signal.SIGKILL)
        assert server.wait(30) == -signal.SIGKILL
    finally:
        await peer.aclose()
    assert part.exists() and part.stat().st_size > 128 << 10  # a crash cannot clean up
    restarted = serve(storage=server.storage)
    assert _partial_files(server.storage) == []
    assert not part.parent.exists()
    assert restarted.stop() == 0
    assert restarted.temporary_files() == []


async def test_two_servers_on_one_storage_keep_each_others_files(
    serve: Callable[..., Serve],
) -> None:
    """A second server's start and stop on the same storage leave the first one's transfer
    alone: it completes, byte for byte."""
    first = serve("--shutdown-timeout", "30")
    data = _big_dataset()
    peer = await _start_transfer(first, data)
    try:
        (part,) = _partial_files(first.storage)
        second = serve(storage=first.storage)  # its start cleans up what nobody owns
        assert part.exists()
        assert second.stop() == 0  # and so does its stop
        assert part.exists()
        for pdu in _fragments(data[len(data) // 2 :], last=True):
            await peer.send(pdu)
        rsp = await peer.read_message()
        assert struct.unpack("<H", rsp[0x00000900])[0] == 0x0000  # Success
        await peer.send(release_rq())
        assert (await peer.read_pdu()).type == 0x06  # A-RELEASE-RP
    finally:
        await peer.aclose()
    assert first.stop() == 0
    (path,) = first.stored()
    assert dataset_bytes(path) == data
    assert first.temporary_files() == []


# --- asynchronous operations -----------------------------------------------------------------------

WINDOW = re.compile(r"asynchronous operations window (\d+|unlimited)")


@pytest.mark.parametrize(
    ("serve_args", "config", "store_ops", "window"),
    [
        ((), None, "16", "8"),  # the default grants 8
        (("--async-ops", "8"), None, "8", "8"),
        ((), "async-ops = 3", "8", "3"),  # the TOML key
        ((), None, "1", "1"),  # no window proposed: one at a time (PS3.7 D.3.3.3)
    ],
)
def test_store_async_ops_pipelines_into_serve(
    serve: Callable[..., Serve],
    tmp_path: Path,
    mixed: Mixed,
    serve_args: tuple[str, ...],
    config: str | None,
    store_ops: str,
    window: str,
) -> None:
    if config is not None:
        port, storage = free_port(), tmp_path / "configured"
        path = tmp_path / "dicomnet.toml"
        path.write_text(f'[serve]\nport = {port}\nstorage = "{storage}"\n{config}\n')
        server = serve("--config", str(path), port=port, storage=storage)
    else:
        server = serve(*serve_args)
    result = dicomnet(
        "store",
        "127.0.0.1",
        str(server.port),
        str(mixed.folder),
        "-r",
        "--async-ops",
        store_ops,
        "-v",
    )
    assert result.returncode == 0, result.stderr
    assert WINDOW.findall(result.stderr) == [window]
    assert len(server.stored()) == len(mixed.files)


# --- configuration and defaults --------------------------------------------------------------------


def test_config_file_holds_the_options(
    tmp_path: Path, serve: Callable[..., Serve], mixed: Mixed
) -> None:
    port = free_port()
    storage = tmp_path / "configured"
    config = tmp_path / "dicomnet.toml"
    config.write_text(
        "[serve]\n"
        f'host = "127.0.0.1"\nport = {port}\naet = "ARCHIVE"\nstrict-aet = true\n'
        f'storage = "{storage}"\nallow_ae = ["MODALITY1"]\nlayout = "{{SOPInstanceUID}}.dcm"\n'
        "no_fsync = true\nmax_associations = 4\nshutdown_timeout = 2\n"
    )
    server = serve("--config", str(config), port=port, storage=storage)
    assert "as ARCHIVE" in server.log
    ct = mixed.files["CT_small.dcm"]
    wrong_called = dicomnet("store", "127.0.0.1", str(port), str(ct.path), "--aet", "MODALITY1")
    assert wrong_called.returncode == 2
    assert "called AE title not recognized" in wrong_called.stderr
    wrong_calling = dicomnet("echo", "127.0.0.1", str(port), "--aec", "ARCHIVE")
    assert "calling AE title not recognized" in wrong_calling.stderr
    ok = dicomnet(
        "store", "127.0.0.1", str(port), str(ct.path), "--aet", "MODALITY1", "--aec", "ARCHIVE"
    )
    assert ok.returncode == 0, ok.stderr
    assert (storage / f"{ct.sop_instance_uid}.dcm").is_file()  # the configured layout


def test_command_line_wins_over_config_and_unknown_keys_fail(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('port = 11112\ncolour = "blue"\n')
    result = dicomnet("serve", "--config", str(config))
    assert result.returncode == 2
    assert "unknown option(s) colour" in result.stderr


def test_unusable_index_is_a_clear_error_and_the_files_stay(tmp_path: Path) -> None:
    """A damaged index file: exit 2 with what to do, before anything listens; nothing in the
    storage folder is touched."""
    storage = tmp_path / "store"
    storage.mkdir()
    kept = storage / "kept.dcm"
    kept.write_bytes(b"not touched")
    index = storage / ".dicomnet-index.sqlite"
    index.write_bytes(b"\x00garbage" * 500)
    for extra in ([], ["--workers", "2"]):
        port = free_port()
        result = dicomnet("serve", "--port", str(port), "--storage", str(storage), *extra)
        assert result.returncode == 2, result.stderr
        assert "is not usable" in result.stderr and "dicomnet index" in result.stderr
        assert _refused(port)
    assert kept.read_bytes() == b"not touched"
    assert index.read_bytes() == b"\x00garbage" * 500


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('workers = "many"', "workers must be a number, not 'many'"),
        ("workers = 0", "workers must be at least 1"),
        ("port = true", "port must be a number, not True"),
    ],
)
def test_config_values_that_are_not_numbers(tmp_path: Path, line: str, message: str) -> None:
    config = tmp_path / "dicomnet.toml"
    config.write_text(line + "\n")
    result = dicomnet("serve", "--storage", str(tmp_path / "s"), "--config", str(config))
    assert result.returncode == 2
    assert message in result.stderr


def test_serve_alone_uses_the_defaults(tmp_path: Path) -> None:
    """`dicomnet serve` with no option: 127.0.0.1:11112, AE DICOMNET, ./dicom-store."""
    if not _refused(11112):
        _port_busy("port 11112 is in use on this machine")
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*DICOMNET, "serve"], cwd=tmp_path, stdout=log, stderr=log)
        try:
            # Readiness from its own log line, so another program on 11112 cannot pass for it.
            deadline = time.monotonic() + 30
            while "listening on 127.0.0.1:11112 as DICOMNET" not in log_path.read_text():
                if proc.poll() is not None:
                    if "cannot listen" in log_path.read_text():
                        _port_busy("port 11112 was taken meanwhile by another program")
                    raise AssertionError(log_path.read_text())
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.02)
            result = dicomnet("echo", "127.0.0.1", "11112", "--aec", "DICOMNET")
            assert result.returncode == 0, result.stderr
        finally:
            if proc.poll() is None:
                proc.terminate()
            code = proc.wait(30)
    assert code == 0, log_path.read_text()
    assert (tmp_path / "dicom-store").is_dir()


def test_port_in_use_is_a_clear_error(serve: Callable[..., Serve], tmp_path: Path) -> None:
    server = serve()
    result = dicomnet("serve", "--port", str(server.port), "--storage", str(tmp_path / "other"))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr


# --- help -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ((), ["echo", "store", "serve", "find", "move", "get"]),
        (("echo",), ["--aet", "--aec", "--count", "round-trip"]),
        (("store",), ["--aet", "--aec", "--recursive", "--max-pdu", "progress", "Exit code"]),
        (("serve",), ["--host", "--port", "--aet", "--storage", "--allow-ae", "--config"]),
        (("find",), ["--key", "--json", "--csv"]),
        (("move",), ["--dest", "--listen"]),
        (("get",), ["--out"]),
        (("index",), ["STORAGE", "--fresh"]),
    ],
)
def test_help(command: tuple[str, ...], expected: list[str]) -> None:
    result = dicomnet(*command, "--help")
    assert result.returncode == 0, result.stderr
    for word in expected:
        assert word in result.stdout, word


def test_python_dash_m_dicomnet() -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "dicomnet", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "version" in result.stdout


# --- several processes on one port ----------------------------------------------------------------


@pytest.mark.interop
def test_workers_share_the_port_and_stop_together(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    """--workers 2: two processes accept from one listening socket; four storescu at once all
    land, each instance is indexed once, and SIGTERM to the parent stops every worker."""
    import psutil

    storescu = require_tool("storescu")
    findscu = require_tool("findscu")
    server = serve("--workers", "2")
    # The parent binds, then forks: the port can answer before the worker exists.
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 10
    while not workers and time.monotonic() < deadline:
        workers = psutil.Process(server.proc.pid).children()
        if not workers:
            time.sleep(0.05)
    assert len(workers) == 1  # the parent serves too
    folders = [tmp_path / f"in{n}" for n in range(4)]
    sent: dict[str, bytes] = {}
    studies = [generate_uid() for _ in folders]
    for folder, study in zip(folders, studies, strict=True):
        for i in range(15):
            ds = write_ct(
                folder / f"{i:03d}.dcm", rows=64, columns=64, patient_id="WORKERS", study_uid=study
            )
            sent[str(ds.SOPInstanceUID)] = dataset_bytes(folder / f"{i:03d}.dcm")
    _storescu_at_once(storescu, server.port, folders, "W")
    stored = server.stored()
    assert len(stored) == 60
    for path in stored:
        assert dataset_bytes(path) == sent[path.stem]
    # Both processes write the one index: a STUDY-level query finds each study with its 15
    # instances, each counted once.
    query = [findscu, "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=WORKERS"]
    query += ["-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances"]
    query += ["127.0.0.1", str(server.port)]
    expected = {study: "15" for study in studies}
    deadline = time.monotonic() + 20
    found: dict[str, str] = {}
    while time.monotonic() < deadline:  # rows are written just after each store is answered
        result = run(query)
        lines = (result.stdout + result.stderr).splitlines()
        uids = [_value(line) for line in lines if "(0020,000d) UI [" in line]
        counts = [_value(line) for line in lines if "(0020,1208) IS [" in line]
        found = dict(zip(uids, counts, strict=True))
        if found == expected:
            break
        time.sleep(0.1)
    assert found == expected
    assert server.stop() == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert server.temporary_files() == []
    assert _index_rows_and_state(server.storage) == (60, "clean")  # no repair on the next start


def _value(line: str) -> str:
    """The value of a findscu -v dump line: ``(0020,000d) UI [1.2.3]  # ...`` gives ``1.2.3``."""
    # A UI value of odd length is padded with NUL (PS3.5 §6.2); findscu shows the pad.
    return line.split("[", 1)[1].split("]", 1)[0].rstrip("\x00 ")


def _index_rows_and_state(storage: Path) -> tuple[int, str | None]:
    """The number of instances in the storage folder's index and its shutdown mark."""
    import sqlite3

    db = sqlite3.connect(storage / ".dicomnet-index.sqlite")
    try:
        (rows,) = db.execute("SELECT count(*) FROM instance").fetchone()
        state = db.execute("SELECT value FROM state WHERE key = 'shutdown'").fetchone()
    finally:
        db.close()
    return int(rows), None if state is None else str(state[0])


def _storescu_at_once(storescu: str, port: int, folders: list[Path], aet: str) -> None:
    """One storescu per folder, all at once (calling AE ``aet`` + its number); each must
    succeed."""
    procs = [
        subprocess.Popen(
            [storescu, "+sd", "-aet", f"{aet}{n}", "127.0.0.1", str(port), str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dcmtk_env(),
        )
        for n, folder in enumerate(folders)
    ]
    try:
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out.decode(errors="replace")


def _port_busy(reason: str) -> None:
    """The defaults can only be tested on a free 11112: skip on a developer's machine, but
    fail in CI (DICOMNET_REQUIRE_PEERS=1), where the default port must be testable."""
    if REQUIRE_PEERS:
        pytest.fail(f"{reason}; the default port cannot be tested (DICOMNET_REQUIRE_PEERS=1)")
    pytest.skip(reason)
