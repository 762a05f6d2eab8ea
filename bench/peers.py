"""Starting, timing and stopping the processes of a benchmark: the three storage SCPs, the client
tools, the machine and version facts for the results page.

Every process gets TCP_NODELAY=1 in its environment (DCMTK keeps Nagle's algorithm on without it),
every wait is bounded, and every process started here is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from data import BENCH, ROOT
from tests.helpers import dcmtk_env, free_port, wait_for_port

PYTHON = sys.executable
BIN = Path(sys.executable).parent
AGENTS = str(BENCH / "agents.py")
ENV = dcmtk_env()


def dcmtk(name: str) -> str:
    """DCMTK's tool ``name``: the first on PATH that is a program, not a Python script (the venv
    holds pynetdicom's scripts of the same names)."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with open(candidate, "rb") as f:
                if f.read(2) != b"#!":
                    return str(candidate)
    raise SystemExit(f"DCMTK's {name} is not installed (apt-get install dcmtk)")


def dicomnet_cli() -> str:
    exe = BIN / "dicomnet"
    if exe.exists():
        return str(exe)
    found = shutil.which("dicomnet")
    if found is None:
        raise SystemExit("the dicomnet command is not installed (pip install -e .)")
    return found


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a running process, in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Server:
    """A storage SCP subprocess on 127.0.0.1:``port`` writing into ``folder``."""

    kind: str
    cmd: list[str]
    folder: Path
    port: int
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 30) -> Server:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = open(self.folder.parent / f"{self.folder.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**ENV, **self.extra_env},
            cwd=self.folder.parent,
        )
        wait_for_port(self.port, self.proc, timeout=timeout)  # type: ignore[arg-type]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid) if self.proc is not None else None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid) if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log is not None:
            self.log.close()
            self.log = None


def dcmtk_scp(folder: Path, *extra: str) -> Server:
    port = free_port()
    cmd = [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(folder), *extra, str(port)]
    return Server("dcmtk", cmd, folder, port)


def pynetdicom_scp(folder: Path) -> Server:
    port = free_port()
    cmd = [PYTHON, AGENTS, "pynetdicom-scp", str(port), str(folder)]
    return Server("pynetdicom", cmd, folder, port)


def dicomnet_scp(
    folder: Path,
    *,
    fsync: bool = False,
    workers: int = 1,
    profile: list[str] | None = None,
    extra: tuple[str, ...] = (),
) -> Server:
    port = free_port()
    serve = [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage",
        str(folder),
        "--max-associations",
        "100",  # as the pynetdicom SCP; the default 64 leaves no headroom in row 4b
        "--no-web",  # DICOM only, as the other SCPs (row 8 measures DICOMweb)
        "-q",
    ]
    if not fsync:
        serve.append("--no-fsync")
    if workers > 1:
        serve += ["--workers", str(workers)]
    serve += extra  # e.g. the TLS options
    if profile is None:
        return Server("dicomnet", [dicomnet_cli(), *serve], folder, port)
    # Profiled: the same command line, run under the given profiler prefix.
    main = "import sys; from dicomnet.cli.main import main; sys.argv[0] = 'dicomnet'; main()"
    return Server("dicomnet", [*profile, PYTHON, "-c", main, *serve], folder, port, signal.SIGINT)


@dataclass
class Timed:
    """How a client process (or a group of them) went."""

    seconds: float
    returncode: int
    max_rss_mb: float | None
    output: str


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for ``proc``, killing it after ``timeout``; its exit code. (A blocking wait with a
    timer, because ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, which would show in
    the timings.)"""
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        return proc.wait()
    finally:
        killer.cancel()


# The peak RSS that wait4 reports for a child of this process includes this process's own, which
# the child inherits at fork; GNU time forks from a small process, so its figure is the client's.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_clients(cmds: list[list[str]], logdir: Path, timeout: float) -> Timed:
    """Start every command at once; time from the first start to the last exit."""
    logdir.mkdir(parents=True, exist_ok=True)
    logs = [open(logdir / f"client-{i}.log", "wb+") for i in range(len(cmds))]  # noqa: SIM115
    procs: list[subprocess.Popen[bytes]] = []
    try:
        start = time.perf_counter()
        for i, (cmd, log) in enumerate(zip(cmds, logs, strict=True)):
            if TIME:  # GNU time reports the client's own peak RSS (see _wait4)
                cmd = [TIME, "-f", "%M", "-o", str(logdir / f"rss-{i}.txt"), *cmd]
            procs.append(
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=logdir)
            )
        deadline = start + timeout
        worst = 0
        for proc in procs:
            worst = worst or _wait(proc, max(1.0, deadline - time.perf_counter()))
        seconds = time.perf_counter() - start
        rss = 0.0
        for i in range(len(procs) if TIME else 0):
            with contextlib.suppress(OSError, ValueError):
                rss = max(rss, int((logdir / f"rss-{i}.txt").read_text().split()[-1]) / 1024)
        output = []
        for log in logs:
            log.seek(0)
            output.append(log.read().decode(errors="replace"))
        return Timed(seconds, worst, rss or None, "\n".join(output))
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(ChildProcessError):
                    proc.wait(10)
        for log in logs:
            log.close()


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (out.stdout + out.stderr).splitlines():
        if line.strip():
            return line.strip().strip("$").strip()
    return "unknown"


def _startup(cmd: list[str]) -> float:
    """Best of three wall times of a command that only starts and exits."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / (1 << 20)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dicomnet": _version("dicomnet"),
        "pydicom": _version("pydicom"),
        "pynetdicom": _version("pynetdicom"),
        "uvloop": _version("uvloop"),
        "dcmtk": _first_line([dcmtk("storescp"), "--version"]),
        "git": _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "startup_dicomnet": _startup([dicomnet_cli(), "--version"]),
        "startup_pynetdicom": _startup([PYTHON, "-m", "pynetdicom", "--version"]),
    }
