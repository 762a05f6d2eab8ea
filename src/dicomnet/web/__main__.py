"""``python -m dicomnet.web STORAGE``: serve a storage folder's archive over DICOMweb alone
(until ``dicomnet serve --http-port`` serves DICOM and DICOMweb from one process).

Prints ``listening on http://HOST:PORT/dicom-web`` on stderr once it accepts connections (tests
wait for that line), and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from dicomnet.archive.index import SQLiteIndex
from dicomnet.web.app import WebServer, create_app
from dicomnet.web.config import DEFAULT_HTTP_PORT, WebConfig

#: The index file inside a storage folder (as ``dicomnet serve`` names it).
INDEX_NAME = ".dicomnet-index.sqlite"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicomnet.web", description=__doc__)
    parser.add_argument("storage", type=Path, help="storage folder (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT, help="0: any free port")
    parser.add_argument("--public-url", default=None)
    parser.add_argument("--cors-origin", action="append", default=[])
    parser.add_argument("--max-stow-bytes", type=int, default=None)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--viewer", choices=["ohif", "none"], default=None)
    parser.add_argument("--viewer-dir", default=None, help="a prebuilt OHIF (make ohif)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    extra = {} if args.max_stow_bytes is None else {"max_stow_bytes": args.max_stow_bytes}
    try:
        config = WebConfig(
            host=args.host,
            port=args.port,
            public_url=args.public_url,
            cors_origins=tuple(args.cors_origin),
            fsync=not args.no_fsync,
            viewer=args.viewer,
            viewer_dir=args.viewer_dir,
            **extra,
        )
    except ValueError as exc:
        parser.error(str(exc))
    args.storage.mkdir(parents=True, exist_ok=True)
    index = SQLiteIndex(args.storage / INDEX_NAME)
    try:
        asyncio.run(_serve(config, args.storage, index))
    finally:
        index.close()
    return 0


async def _serve(config: WebConfig, storage: Path, index: SQLiteIndex) -> None:
    try:
        app = create_app(config, storage, index)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    server = WebServer(app, config.host, config.port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://{config.host}:{server.port}/dicom-web", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


if __name__ == "__main__":
    sys.exit(main())
