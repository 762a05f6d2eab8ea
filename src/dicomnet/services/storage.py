"""Storage SCP (PS3.4 Annex B) and Verification SCP (PS3.4 Annex A) writing into a folder.

Rules: success is answered only after the instance is complete on disk and renamed into place
(fsynced first when ``fsync`` is on); a value that would make an unsafe path gets a failure status
and nothing is written; an unexpected error is a failure status, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from dicomnet.archive.storage import DEFAULT_LAYOUT, UnsafePathError, instance_path, layout_keys
from dicomnet.dimse.status import Status
from dicomnet.negotiation import AssociationDecision, AssociationRequest
from dicomnet.pdu import RejectReason, RejectResult, RejectSource
from dicomnet.service import AssociationInfo, CEchoRequest, CStoreRequest, Response, Service

log = logging.getLogger("dicomnet.services.storage")


class StorageService(Service):
    """Accepts Verification and every storage SOP class, and writes each instance to
    ``root/<layout>``. Configure with ``StorageService.factory(...)``."""

    root: Path = Path("dicom-store")
    layout: str = DEFAULT_LAYOUT
    ae_title: str | None = None  # when set, other called AE titles are rejected
    allowed_calling_aes: Sequence[str] = ()  # when non-empty, only these may associate
    on_stored: Callable[[CStoreRequest, Path], None] | None = None

    @classmethod
    def factory(
        cls,
        root: str | Path,
        *,
        layout: str = DEFAULT_LAYOUT,
        ae_title: str | None = None,
        allowed_calling_aes: Sequence[str] = (),
        fsync: bool = True,
        max_operations_performed: int = 1,
        on_stored: Callable[[CStoreRequest, Path], None] | None = None,
    ) -> Callable[[AssociationInfo], StorageService]:
        layout_keys(layout)  # validate early
        root_path = Path(root)
        root_path.mkdir(parents=True, exist_ok=True)
        attrs = {
            "root": root_path,
            "layout": layout,
            "ae_title": ae_title,
            "allowed_calling_aes": tuple(allowed_calling_aes),
            "fsync": fsync,
            "temp_dir": root_path / ".incoming",
            "max_operations_performed": max_operations_performed,
            "on_stored": staticmethod(on_stored) if on_stored else None,
        }
        configured = type(cls.__name__, (cls,), attrs)
        return configured

    async def on_association_request(self, request: AssociationRequest) -> AssociationDecision:
        if self.ae_title and request.called_ae_title != self.ae_title:
            return request.reject(
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLED_AE_NOT_RECOGNIZED,
            )
        if self.allowed_calling_aes and request.calling_ae_title not in self.allowed_calling_aes:
            return request.reject(
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLING_AE_NOT_RECOGNIZED,
            )
        return await super().on_association_request(request)

    def on_c_echo(self, request: CEchoRequest) -> int:
        return Status.SUCCESS

    def _values(self, request: CStoreRequest) -> dict[str, object]:
        values: dict[str, object] = {
            "SOPInstanceUID": request.sop_instance_uid,
            "SOPClassUID": request.sop_class_uid,
        }
        needed = [k for k in layout_keys(self.layout) if k not in values]
        if needed:
            values.update(request.attributes(*needed))
        return values

    async def on_c_store(self, request: CStoreRequest) -> int | Response:
        try:
            path = instance_path(self.root, self.layout, self._values(request))
        except UnsafePathError as exc:
            log.warning("[%s] refused %s: %s", request.association, request.sop_instance_uid, exc)
            return Response(0xC000, error_comment=str(exc)[:64])
        await request.save(path, fsync_dir=self.fsync)
        log.info(
            "[%s] stored %s (%d bytes) as %s",
            request.association,
            request.sop_instance_uid,
            request.size,
            path,
        )
        if self.on_stored is not None:
            self.on_stored(request, path)
        return Status.SUCCESS
