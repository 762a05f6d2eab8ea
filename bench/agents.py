"""The small programs the benchmark runs as separate processes: the pynetdicom storage SCP, and the
API clients (dicomnet's DicomClient and pynetdicom's AE) that have no command line of their own.

    python bench/agents.py pynetdicom-scp PORT FOLDER
    python bench/agents.py dicomnet-store PORT FILELIST [--aec AE] [--async-ops N]
                           [--tls-ca PEM --tls-cert PEM --tls-key PEM]
    python bench/agents.py dicomnet-echo PORT COUNT [--aec AE]
    python bench/agents.py pynetdicom-echo PORT COUNT [--aec AE]

Clients print one JSON line: {"seconds": ..., "done": ..., "failed": ...}; ``seconds`` is measured
inside the process, after the imports (for echo: the loop only, the association already open).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Same event loop choice as the dicomnet command line: uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def pynetdicom_scp(port: int, folder: Path) -> None:
    """pynetdicom's documented fastest way to store: write the received data set bytes as they
    are after a preamble and the file meta information (no decode and re-encode). Up to 100
    associations at once (pynetdicom's default of 10 would reject the concurrent rows)."""
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    def handle_store(event: Any) -> int:
        name = folder / f"CT.{event.request.AffectedSOPInstanceUID}"
        with open(name, "wb") as f:
            f.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(f, event.file_meta, enforce_standard=False)
            f.write(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="STORESCP")
    ae.maximum_associations = 100
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.start_server((HOST, port), block=True, evt_handlers=[(evt.EVT_C_STORE, handle_store)])


async def dicomnet_store(
    port: int, files: list[str], aec: str, async_ops: int, tls: list[str] | None = None
) -> dict[str, Any]:
    import dicomnet
    from dicomnet.security.tls import client_context

    ssl = client_context(tls[0], tls[1], tls[2]) if tls else None

    done = failed = 0

    def on_response(request: dicomnet.Request, response: object) -> None:
        nonlocal done, failed
        if int(getattr(response, "status", 0xFFFF)) == 0:
            done += 1
        else:
            failed += 1

    start = time.perf_counter()
    async with dicomnet.DicomClient(
        HOST, port, calling_ae="DICOMNET", called_ae=aec, ssl=ssl
    ) as client:
        client.negotiate_async_ops(async_ops)
        for path in files:
            await client.add_request(
                dicomnet.CStoreRequest.from_file(path, on_response=on_response)
            )
        await client.send()
    return {"seconds": time.perf_counter() - start, "done": done, "failed": failed}


async def dicomnet_echo(port: int, count: int, aec: str) -> dict[str, Any]:
    import dicomnet

    failed = 0
    async with dicomnet.DicomClient(HOST, port, calling_ae="DICOMNET", called_ae=aec) as client:
        failed += await client.c_echo() != 0  # opens the association
        start = time.perf_counter()
        for _ in range(count):
            failed += await client.c_echo() != 0
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "done": count - failed, "failed": failed}


def pynetdicom_echo(port: int, count: int, aec: str) -> dict[str, Any]:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    assoc = ae.associate(HOST, port, ae_title=aec)
    if not assoc.is_established:
        return {"seconds": 0.0, "done": 0, "failed": count}
    failed = 0
    try:
        assoc.send_c_echo()
        start = time.perf_counter()
        for _ in range(count):
            rsp = assoc.send_c_echo()
            failed += getattr(rsp, "Status", 0xFFFF) != 0
        seconds = time.perf_counter() - start
    finally:
        assoc.release()
    return {"seconds": seconds, "done": count - failed, "failed": failed}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    scp = sub.add_parser("pynetdicom-scp")
    scp.add_argument("port", type=int)
    scp.add_argument("folder", type=Path)
    store = sub.add_parser("dicomnet-store")
    store.add_argument("port", type=int)
    store.add_argument("filelist", type=Path)
    store.add_argument("--aec", default="ANY-SCP")
    store.add_argument("--async-ops", type=int, default=8)
    store.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"), default=None)
    for name in ("dicomnet-echo", "pynetdicom-echo"):
        echo = sub.add_parser(name)
        echo.add_argument("port", type=int)
        echo.add_argument("count", type=int)
        echo.add_argument("--aec", default="ANY-SCP")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "pynetdicom-scp":
        pynetdicom_scp(args.port, args.folder)
        return 0
    if args.cmd == "dicomnet-store":
        files = args.filelist.read_text().split("\n")
        result = _run(
            dicomnet_store(args.port, [f for f in files if f], args.aec, args.async_ops, args.tls)
        )
    elif args.cmd == "dicomnet-echo":
        result = _run(dicomnet_echo(args.port, args.count, args.aec))
    else:
        result = pynetdicom_echo(args.port, args.count, args.aec)
    print(json.dumps(result), flush=True)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
