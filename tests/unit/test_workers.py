"""``dicomnet.workers``: forked workers stop and are reaped on SIGTERM, a worker that ignores it
is killed after the timeout, and (Linux) a worker dies with its parent even when the parent is
killed with SIGKILL. Each case runs in a child Python process, so pytest itself never forks."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

from dicomnet.workers import fork_workers, stop_workers

# Forks argv[1] workers that wait for SIGTERM (or ignore it when argv[2] is "ignore") and exit
# 0; the parent prints their PIDs, then what stop_workers returned and how long it took.
_STOPPER = """
import os, signal, sys, time
from dicomnet.workers import fork_workers, stop_workers
ignore = sys.argv[2] == "ignore"
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
children = fork_workers(int(sys.argv[1]))
if children is None:
    while True:
        if not ignore:
            signal.sigwait({signal.SIGTERM})
            os._exit(0)
        signal.pause()
print(" ".join(map(str, children)), flush=True)
start = time.monotonic()
clean = stop_workers(children, float(sys.argv[3]))
print(clean, round(time.monotonic() - start, 2), flush=True)
"""


def _stop(count: int, mode: str, timeout: float) -> tuple[list[int], bool, float]:
    result = subprocess.run(
        [sys.executable, "-c", _STOPPER, str(count), mode, str(timeout)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pids_line, outcome = result.stdout.splitlines()
    clean, seconds = outcome.split()
    return [int(p) for p in pids_line.split()], clean == "True", float(seconds)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_workers_stop_on_sigterm_and_are_reaped() -> None:
    pids, clean, seconds = _stop(2, "wait", 10)
    assert len(pids) == 2
    assert clean
    assert seconds < 10
    assert all(_gone(pid) for pid in pids)


def test_a_worker_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    pids, clean, seconds = _stop(1, "ignore", 0.5)
    assert not clean
    assert 0.5 <= seconds < 10
    assert all(_gone(pid) for pid in pids)


def test_no_worker_and_a_negative_count() -> None:
    assert fork_workers(0) == []
    assert stop_workers([], 1) is True
    with pytest.raises(ValueError, match="at least 0"):
        fork_workers(-1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_its_parent_even_by_sigkill() -> None:
    script = """
import signal, sys
from dicomnet.workers import fork_workers
children = fork_workers(1)
if children is None:
    signal.pause()  # until SIGTERM (the default action ends the process)
else:
    print(children[0], flush=True)
    signal.pause()
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = 0
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        assert ready, "the parent printed no worker"
        worker = int(parent.stdout.readline())
        assert not _gone(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 20
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(worker)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        if worker and not _gone(worker):  # an orphan after a failure: ours to stop
            os.kill(worker, signal.SIGKILL)
