"""fo-dicom's storage SCU sample in dicomnet: asks for the host, port and files, negotiates an
asynchronous operations window and prints each response's status.

    python examples/store_scu.py [HOST PORT FILE...]   (asks for what is missing)
"""

from __future__ import annotations

import asyncio
import sys

import dicomnet
from dicomnet.dimse.commands import ResponseMessage
from dicomnet.dimse.status import describe


async def main(host: str, port: int, paths: list[str]) -> int:
    failures = 0

    def on_response(request: dicomnet.Request, response: object) -> None:
        nonlocal failures
        assert isinstance(request, dicomnet.CStoreRequest)  # what we sent
        assert isinstance(response, ResponseMessage)  # its C-STORE-RSP
        status = response.status
        if status != 0:
            failures += 1
        print(f"{request.sop_instance_uid}: {describe(status)}", flush=True)

    async with dicomnet.DicomClient(
        host, port, calling_ae="FODICOMSCU", called_ae="STORESCP"
    ) as client:
        client.negotiate_async_ops(8)
        requests = []
        for path in paths:
            request = dicomnet.CStoreRequest.from_file(path, on_response=on_response)
            requests.append(request)
            await client.add_request(request)
        await client.send()
        for request in requests:
            if request.error is not None:
                failures += 1
                print(f"{request.sop_instance_uid}: not sent: {request.error}")
    return 1 if failures else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    host = args[0] if args else input("host: ").strip()
    port = int(args[1]) if len(args) > 1 else int(input("port: ").strip())
    files = args[2:] or input("files (space separated): ").split()
    try:
        sys.exit(asyncio.run(main(host, port, files)))
    except (dicomnet.DicomNetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
