"""Fixtures for interop tests: a dicomnet server in a background thread (so blocking peer tools
can run from the test), and DCMTK servers as subprocesses stopped by PID."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomnet.server import DicomServer
from dicomnet.service import AssociationInfo, Service
from tests.helpers import dcmtk_env, free_port, require_tool, wait_for_port


class ThreadedServer:
    """Runs a DicomServer on its own event loop in a thread; ``port`` is ready when started."""

    def __init__(self, factory: Callable[[AssociationInfo], Service]) -> None:
        self.factory = factory
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with DicomServer(self.factory, "127.0.0.1", 0) as server:
            self.server = server
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ThreadedServer:
        self.thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)


@pytest.fixture
def threaded_server() -> Iterator[Callable[[Callable[[AssociationInfo], Service]], ThreadedServer]]:
    servers: list[ThreadedServer] = []

    def start(factory: Callable[[AssociationInfo], Service]) -> ThreadedServer:
        server = ThreadedServer(factory).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class DcmtkStorescp:
    def __init__(self, folder: Path, aet: str = "STORESCP", extra: list[str] | None = None) -> None:
        exe = require_tool("storescp")
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.log = open(folder.parent / f"storescp-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                exe,
                "-aet",
                aet,
                "-od",
                str(folder),
                "--fork" if extra and "--fork" in extra else "-v",
                *(e for e in (extra or []) if e != "--fork"),
                str(self.port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dcmtk_env(),
        )
        wait_for_port(self.port, self.proc)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def dcmtk_storescp(tmp_path: Path) -> Iterator[Callable[..., DcmtkStorescp]]:
    started: list[DcmtkStorescp] = []

    def start(**kwargs: Any) -> DcmtkStorescp:
        scp = DcmtkStorescp(tmp_path / f"dcmtk-in-{len(started)}", **kwargs)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()
