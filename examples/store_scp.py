"""fo-dicom's storage SCP sample in dicomnet: stores every instance as
./DICOM/<StudyInstanceUID>/<SOPInstanceUID>.dcm.

    python examples/store_scp.py [PORT]        (default 11112; called AE title must be STORESCP)
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import dicomnet
from dicomnet import Reason, ReceivedCEcho, ReceivedCStore, Reject, Source, Status
from dicomnet.service import CEchoProvider, CStoreProvider
from dicomnet.uids import IMAGE_SYNTAXES, UNCOMPRESSED, VERIFICATION, is_storage, is_valid_uid

root = Path("DICOM")


class StoreSCP(dicomnet.Service, CStoreProvider, CEchoProvider):  # mypy checks the handlers
    temp_dir = root / ".incoming"  # same file system as the archive: save() is a rename
    max_operations_performed = 8  # asynchronous operations window, if the SCU asks for one

    async def on_association_request(self, request: dicomnet.AssociationRequest):  # type: ignore[no-untyped-def]
        if request.called_ae_title != "STORESCP":
            return request.reject(
                Reject.PERMANENT, Source.SERVICE_USER, Reason.CALLED_AE_NOT_RECOGNIZED
            )
        for pc in request.presentation_contexts:
            if pc.abstract_syntax == VERIFICATION:
                pc.accept(UNCOMPRESSED)
            elif is_storage(pc.abstract_syntax):
                pc.accept(IMAGE_SYNTAXES)
        return request.accept()

    async def on_c_store(self, request: ReceivedCStore) -> int:
        study_uid = str(request.dataset.get("StudyInstanceUID", ""))
        instance_uid = request.sop_instance_uid
        if not (is_valid_uid(study_uid) and is_valid_uid(instance_uid)):
            # Not a UID: it could name a path outside the storage folder.
            return Status.PROCESSING_FAILURE
        await request.save(root / study_uid / f"{instance_uid}.dcm")
        return Status.SUCCESS

    async def on_c_echo(self, request: ReceivedCEcho) -> int:
        return Status.SUCCESS


async def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 11112
    async with dicomnet.DicomServer(StoreSCP, host="127.0.0.1", port=port) as server:
        print(f"storage SCP listening on 127.0.0.1:{server.port}, AE title STORESCP", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
