"""Worker processes: several processes serving from one listening socket (like DCMTK's
``storescp --fork``, but started once), forked, tied to the parent's life, stopped and reaped.

Rules: fork before any thread or event loop exists (a child gets only the forking thread, and
a lock another thread held stays locked in it for good); each worker then builds its own event
loop, server and service. On Linux a worker gets SIGTERM when its parent dies, even by SIGKILL
(``PR_SET_PDEATHSIG``), so no orphan keeps the port; elsewhere it does not. Stopping is SIGTERM
(each worker finishes its associations as the parent does), then SIGKILL after a timeout.
POSIX only (``os.fork``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("dicomnet.workers")

#: How often ``stop_workers`` looks for exited workers while it waits (seconds).
_REAP_INTERVAL = 0.05


def fork_workers(count: int) -> list[int] | None:
    """Start ``count`` more processes that continue from this call; returns their PIDs in the
    parent and None in a worker. ``count`` 0 forks nothing and returns ``[]``."""
    if count < 0:
        raise ValueError(f"count must be at least 0, not {count}")
    if count and threading.active_count() > 1:
        log.warning(
            "forking %d worker(s) while %d threads run: only this thread goes on in them",
            count,
            threading.active_count(),
        )
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            return None
        children.append(pid)
    if children:
        log.debug("started worker(s) %s", ", ".join(map(str, children)))
    return children


def _die_with_parent() -> None:
    """Linux: SIGTERM for this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def stop_workers(pids: Sequence[int], timeout: float) -> bool:
    """SIGTERM the workers and reap them; SIGKILL those left after ``timeout`` seconds. True
    when every worker exited with status 0."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:  # exited already; still reaped below
            pass
    deadline = time.monotonic() + timeout
    pending = set(pids)
    clean = True
    while pending:
        for pid in list(pending):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its status is unknown
                done, status = pid, 1 << 8
            if done:
                pending.discard(pid)
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    log.warning("worker %d exited with %s", pid, code)
                    clean = False
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(_REAP_INTERVAL)
    for pid in sorted(pending):
        log.warning("worker %d did not stop in %.0f s; killing it", pid, timeout)
        clean = False
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return clean


__all__ = ["fork_workers", "stop_workers"]
