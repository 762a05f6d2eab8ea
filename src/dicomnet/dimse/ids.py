"""Message IDs for one association (PS3.7 §9.1.1.1, §E.1: Message ID is US, 1-65535 in practice).

Rules: one allocator per association side, shared by every request that side sends (client
requests, and a server's C-GET C-STORE sub-operations). IDs cycle 1..65535 and never hand out
an ID that the caller says is still outstanding, so a long-lived association never tries to
encode 65,536 and never has two requests in flight with one ID.
"""

from __future__ import annotations

from collections.abc import Container

MAX_MESSAGE_ID = 0xFFFF


class MessageIdsExhausted(RuntimeError):
    """All 65,535 message IDs are outstanding at once."""


class MessageIds:
    """Cycles through 1..65535, skipping IDs in ``in_use``."""

    __slots__ = ("_last",)

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= MAX_MESSAGE_ID:
            raise ValueError(f"a message ID is 1-{MAX_MESSAGE_ID}, not {start}")
        self._last = start - 1

    def allocate(self, in_use: Container[int] = ()) -> int:
        """The next free message ID after the last one handed out."""
        candidate = self._last
        for _ in range(MAX_MESSAGE_ID):
            candidate = candidate % MAX_MESSAGE_ID + 1
            if candidate not in in_use:
                self._last = candidate
                return candidate
        raise MessageIdsExhausted(f"all {MAX_MESSAGE_ID} message IDs are outstanding")

    __call__ = allocate
