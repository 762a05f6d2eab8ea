"""Service mixins that each answer their own SOP classes and leave every other request to the
next class of the service: how the worklist, MPPS and storage commitment SCPs compose with
``ArchiveService`` into the one service ``dicomnet serve`` runs (``services.workflow``).

Rules: the dispatcher finds one handler per operation by name (``on_c_find``, ``on_n_action``...),
so a mixin's handler checks the request's SOP class and hands a request that is not its own to
``pass_on``/``pass_on_find``: the same handler of the next class in the service's MRO, or, when no
class further on has one, the answer PS3.7 gives a service without that handler (0x0211
Unrecognized operation for a DIMSE-N request, 0x0122 SOP class not supported for C-FIND).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydicom import Dataset

from dicomnet.dimse.status import Status
from dicomnet.service import HandlerResult, ReceivedCFind, ReceivedN, Response, Service

log = logging.getLogger("dicomnet.services")


def next_handler(service: Service, owner: type[Any], name: str) -> Any:
    """Handler ``name`` of the first class after ``owner`` in ``service``'s MRO that defines
    it, bound to ``service``; None if none does. The provider Protocols (``CFindProvider``...)
    are skipped: their methods only declare the signature."""
    mro = type(service).__mro__
    for cls in mro[mro.index(owner) + 1 :]:
        if getattr(cls, "_is_protocol", False) or name not in cls.__dict__:
            continue
        return getattr(super(mro[mro.index(cls) - 1], service), name)
    return None


async def pass_on(
    service: Service, owner: type[Any], name: str, request: ReceivedN
) -> HandlerResult:
    """Answer ``request`` with handler ``name`` of the class after ``owner`` in ``service``'s
    MRO; 0x0211 (logged) when none has it."""
    handler = next_handler(service, owner, name)
    if handler is None:
        log.warning(
            "[%s] %s for %s: not offered here; answered 0x0211",
            request.association,
            request.message.NAME,
            request.sop_class_uid,
        )
        return Response(
            Status.UNRECOGNIZED_OPERATION,
            error_comment=f"{request.message.NAME} is not offered for {request.sop_class_uid}",
        )
    result = handler(request)
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, int | Response)
    return result


async def pass_on_find(
    service: Service, owner: type[Any], request: ReceivedCFind
) -> AsyncIterator[Dataset | Response]:
    """The C-FIND answers of the class after ``owner`` in ``service``'s MRO; 0x0122 when none
    has ``on_c_find``."""
    handler = next_handler(service, owner, "on_c_find")
    if handler is None:
        yield Response(
            Status.SOP_CLASS_NOT_SUPPORTED,
            error_comment=f"C-FIND is not offered for {request.sop_class_uid}",
        )
        return
    async with contextlib.aclosing(handler(request)) as answers:
        async for answer in answers:
            yield answer


__all__ = ["next_handler", "pass_on", "pass_on_find"]
