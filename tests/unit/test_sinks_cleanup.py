"""Who owns a temporary file (``dicomnet.sinks``): each process writes into its own folder beside
a lock file it holds; ``remove_temp_files`` removes only what no live process holds: what a
SIGKILL left, and the loose files and folders of dicomnet 0.1, never another process's file in
use nor anything that is not dicomnet's."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomnet import sinks
from dicomnet.sinks import LOCK_SUFFIX, TEMP_PREFIX, close_temp_pools, remove_temp_files, temp_file

# A process that takes one temporary file in argv[1], writes into it, prints its path and holds
# it until its stdin closes (or it is killed).
_OWNER = """
import os, sys
from dicomnet.sinks import temp_file
fd, path = temp_file(sys.argv[1])
os.write(fd, b"x" * 4096)
print(path, flush=True)
sys.stdin.read()
"""


def _owned_folder(path: Path, top: Path) -> Path:
    """The process's own folder a temporary file is in (the file may be in a pool sub-folder)."""
    return top / path.relative_to(top).parts[0]


def _tree(top: Path) -> list[str]:
    return sorted(p.relative_to(top).as_posix() for p in top.rglob("*"))


def _first_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """The first line a child prints, waiting at most ``timeout`` seconds for it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child printed nothing"
    return proc.stdout.readline().strip()


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "incoming")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


@pytest.fixture(autouse=True)
def _no_pools_left() -> Iterator[None]:
    yield
    close_temp_pools()


def test_a_live_owner_keeps_its_file_and_a_killed_one_loses_it(
    tmp_path: Path, owner: subprocess.Popen[str]
) -> None:
    incoming = tmp_path / "incoming"
    path = Path(_first_line(owner))
    folder = _owned_folder(path, incoming)
    assert folder.parent == incoming and folder.name.startswith(f"{TEMP_PREFIX}{owner.pid}-")
    assert (incoming / (folder.name + LOCK_SUFFIX)).is_file()
    assert remove_temp_files(incoming) == 0  # the owner lives: nothing of it goes
    assert path.stat().st_size == 4096
    owner.send_signal(signal.SIGKILL)
    owner.wait(30)
    assert path.exists()  # a killed process removes nothing itself
    assert remove_temp_files(incoming) >= 1  # its file, and the empty ones its pool made ahead
    assert not incoming.exists()


def test_own_files_survive_a_cleanup_in_the_same_process(tmp_path: Path) -> None:
    fd, name = temp_file(tmp_path)
    os.write(fd, b"data")
    assert remove_temp_files(tmp_path) == 0
    assert Path(name).read_bytes() == b"data"
    os.close(fd)
    os.unlink(name)
    close_temp_pools()  # the folder is empty now: it is given up, lock file and all
    assert _tree(tmp_path) == []


def test_a_folder_with_a_file_in_use_stays_owned_after_close(tmp_path: Path) -> None:
    """The server closes its pools while another server of the process still receives a file:
    that folder stays locked (a cleanup elsewhere must not take it) until it is empty."""
    fd, name = temp_file(tmp_path)
    close_temp_pools()
    assert remove_temp_files(tmp_path) == 0
    assert Path(name).exists()
    os.close(fd)
    os.unlink(name)
    close_temp_pools()
    assert _tree(tmp_path) == []


def test_a_lock_held_elsewhere_protects_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / f"{TEMP_PREFIX}999-0a1b2c3d"
    (folder / f"{TEMP_PREFIX}0").mkdir(parents=True)
    part = folder / f"{TEMP_PREFIX}0" / f"{TEMP_PREFIX}feed{sinks.TEMP_SUFFIX}"
    part.write_bytes(b"x")
    lock = os.open(tmp_path / (folder.name + LOCK_SUFFIX), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another open file: it conflicts like a process
        assert remove_temp_files(tmp_path) == 0
        assert part.exists()
    finally:
        os.close(lock)
    assert remove_temp_files(tmp_path) == 1
    assert not tmp_path.exists()


def test_leftovers_of_dicomnet_0_1_go_and_other_files_stay(tmp_path: Path) -> None:
    """0.1 put the pool's folders (.dicomnet-N) and loose files in the directory, unlocked."""
    (tmp_path / ".dicomnet-0").mkdir()
    (tmp_path / ".dicomnet-0" / ".dicomnet-ab.part").write_bytes(b"x" * 10)
    (tmp_path / ".dicomnet-cd.part").write_bytes(b"y")
    (tmp_path / ".dicomnet-1").mkdir()
    (tmp_path / ".dicomnet-1" / "keep.txt").write_text("not dicomnet's")
    (tmp_path / "notes.txt").write_text("")
    assert remove_temp_files(tmp_path) == 2
    assert _tree(tmp_path) == [".dicomnet-1", ".dicomnet-1/keep.txt", "notes.txt"]
    assert remove_temp_files(tmp_path / "missing") == 0


def test_a_creator_that_loses_its_lock_to_a_cleanup_takes_another_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleanup can open a new lock file and lock it before its creator: the creator leaves
    that name to the cleanup and makes another folder."""
    real_lock = sinks._lock
    calls: list[int] = []

    def lock_taken_first(fd: int) -> bool | None:
        calls.append(fd)
        return False if len(calls) == 1 else real_lock(fd)

    monkeypatch.setattr(sinks, "_lock", lock_taken_first)
    owned = sinks._OwnedFolder(str(tmp_path))
    monkeypatch.undo()
    assert len(calls) == 2
    stray = [p for p in tmp_path.iterdir() if p.name.endswith(LOCK_SUFFIX)]
    assert len(stray) == 2 and Path(owned.path).is_dir()
    remove_temp_files(tmp_path)  # the abandoned lock file goes, the live folder stays
    assert _tree(tmp_path) == sorted([Path(owned.path).name, Path(owned.lock_path).name])
    assert owned.release()
    assert _tree(tmp_path) == []


def test_a_forked_child_writes_into_a_folder_of_its_own(tmp_path: Path) -> None:
    """A child must not hand out its parent's pre-created files (the parent may take the same
    ones): it starts with no pool and no folder."""
    script = """
import os, sys
from dicomnet.sinks import temp_file
fd, parent_path = temp_file(sys.argv[1])
pid = os.fork()
if pid == 0:
    fd, child_path = temp_file(sys.argv[1])
    print(child_path, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(parent_path, flush=True)
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    child, parent = (_owned_folder(Path(line), tmp_path) for line in result.stdout.split())
    assert child != parent
    remove_temp_files(tmp_path)  # both processes are gone: nothing is anyone's any more
    assert not tmp_path.exists()


def test_a_pool_file_in_use_at_close_leaves_nothing_once_gone(tmp_path: Path) -> None:
    """The file in use came from one of the pool's sub-folders (not from the pool running dry):
    the second close removes that sub-folder too, then the process's folder."""
    first_fd, first = temp_file(tmp_path)  # starts the pool and its thread
    own = Path(first).parent if Path(first).parent.parent == tmp_path else Path(first).parent.parent
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not list(own.glob(f"{TEMP_PREFIX}*/*")):
        time.sleep(0.01)  # the pool's thread fills its sub-folders: bounded wait
    fd, name = temp_file(tmp_path)
    assert Path(name).parent.parent == own  # from a sub-folder of the pool
    os.close(first_fd)
    os.unlink(first)
    close_temp_pools()
    assert Path(name).exists()
    os.close(fd)
    os.unlink(name)
    close_temp_pools()
    assert _tree(tmp_path) == []
