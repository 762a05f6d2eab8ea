"""Codec work off the event loop: ``transcode_file`` in worker processes.

Why processes, not threads (measured with bench/codec_speed.py, 512x512 12-bit frames, one vs
two threads): pyjpegls (CharLS), libjpeg and pylibjpeg-rle gained nothing from a second thread
(CPU per wall second 0.9-1.1x), and pylibjpeg-openjpeg's encoder is not thread-safe: two threads
encoding JPEG 2000 at once crash the interpreter (SIGSEGV, every run). Worker processes give both cores to codecs, keep a crash
inside one file (the pool is rebuilt and the file fails with ``TranscodeError``), and leave the
event loop free for other associations.

Rules: workers start through ``forkserver`` (forking a process that runs an event loop and
threads is unsafe); the pool is created on first use and sized to the cores. A worker has no
logging set up: the warnings and log records of a conversion come back in
``TranscodeResult.notes`` and are logged by the calling process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from dicomnet.errors import TranscodeError
from dicomnet.pixels.syntaxes import Target
from dicomnet.pixels.transcode import TranscodeResult, convert_for_storage, transcode_file

log = logging.getLogger("dicomnet.pixels")

#: The loggers whose records a worker sends back: dicomnet's pixel layer and pydicom.
_CAPTURED = ("dicomnet.pixels", "pydicom")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


Conversion = Callable[..., TranscodeResult | None]


def _in_worker(
    function: Conversion, src: str, dst: str, target: str | Target, options: dict[str, Any]
) -> TranscodeResult | None:
    """``function`` (``transcode_file`` or ``convert_for_storage``) in a worker, its warnings
    and log records returned as notes (each once, prefixed with the source path) instead of
    printed by the worker."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in _CAPTURED]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        if lg.level == logging.NOTSET or lg.level > logging.WARNING:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = function(src, dst, target, **options)
    finally:
        for lg, (propagate, level) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate, lg.level = propagate, level
    notes: list[str] = []
    for text in [*handler.messages, *(str(w.message) for w in caught)]:
        text = text if text.startswith(src) else f"{src}: {text}"
        if text not in notes:
            notes.append(text)
    return None if result is None else dataclasses.replace(result, notes=tuple(notes))


#: Imported by the fork server before it forks workers: the conversion code, numpy and the
#: pixel data plugins of the ``codecs`` extra.
PRELOAD = (
    "dicomnet.pixels.transcode",
    "numpy",
    "pydicom.pixels.decoders.base",
    "pydicom.pixels.encoders.base",
    "jpeg_ls",
    "openjpeg",
    "libjpeg",
    "rle",
)


class TranscodePool:
    """Runs ``transcode_file`` in up to ``max_workers`` processes (default: the cores)."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                # The fork server imports the codecs once; every worker forked from it starts
                # with them loaded (about 1.5 s of imports per worker otherwise). Modules that
                # are not installed are skipped by the fork server.
                context.set_forkserver_preload(list(PRELOAD))
                self._executor = ProcessPoolExecutor(self.max_workers, mp_context=context)
            return self._executor

    def warm(self) -> None:
        """Start the worker processes now (in the background), so that the first conversion
        does not wait for them; call when conversions are likely."""
        executor = self._get()
        for _ in range(self.max_workers):
            executor.submit(os.getpid)

    def _reset(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=False)

    async def transcode(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        target: str | Target,
        **options: Any,
    ) -> TranscodeResult:
        """``transcode_file(src, dst, target, **options)`` in a worker process; the warnings
        met on the way are logged here (and kept in the result's ``notes``)."""
        result = await self.run(transcode_file, src, dst, target, **options)
        assert result is not None
        return result

    async def convert_for_storage(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        target: str | Target,
        **options: Any,
    ) -> TranscodeResult | None:
        """``transcode.convert_for_storage`` in a worker process."""
        return await self.run(convert_for_storage, src, dst, target, **options)

    async def run(
        self,
        function: Conversion,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        target: str | Target,
        **options: Any,
    ) -> TranscodeResult | None:
        """``function(src, dst, target, **options)`` (a module-level conversion function of
        ``transcode.py``) in a worker process."""
        executor = self._get()
        destination = os.fspath(dst)
        try:
            work = executor.submit(
                _in_worker, function, os.fspath(src), destination, target, options
            )
        except BrokenProcessPool:
            self._reset(executor)
            raise TranscodeError(
                f"{os.fspath(src)}: the codec processes are gone; the file was not converted"
            ) from None
        try:
            result = await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            # The worker may be converting already: what it writes after the caller gave up
            # is removed when it is done.
            if not work.cancel():
                work.add_done_callback(lambda _: _remove(destination))
            raise
        except BrokenProcessPool:
            self._reset(executor)
            raise TranscodeError(
                f"{os.fspath(src)}: the codec process died while transcoding (a codec crash on "
                "this file's data); the file was not converted"
            ) from None
        for note in result.notes if result is not None else ():
            log.warning("%s", note)
        return result

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    async def __aenter__(self) -> TranscodePool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.shutdown(wait=False)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


_default: TranscodePool | None = None


def default_pool() -> TranscodePool:
    """The process-wide pool (shut down at exit)."""
    global _default
    if _default is None:
        _default = TranscodePool()
        atexit.register(_default.shutdown, False)
    return _default


async def transcode_file_async(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    target: str | Target,
    *,
    pool: TranscodePool | None = None,
    **options: Any,
) -> TranscodeResult:
    """``transcode_file`` without blocking the event loop (in ``pool``, default the shared one)."""
    return await (pool or default_pool()).transcode(src, dst, target, **options)
