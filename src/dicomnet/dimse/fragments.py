"""Splitting DIMSE messages into P-DATA-TF PDUs and reassembling received PDVs
(PS3.7 §8, PS3.8 §9.3.5 and Annex E).

Rules: a PDV never carries more than the peer's maximum PDU length allows (the maximum covers the
P-DATA-TF variable field, PS3.8 D.1: 4 bytes of PDV item length + 2 of header + data). Command
fragments are collected (a command set is small and capped); data set fragments are passed on
as they come, without copying, for the caller to stream to a file. Fragments out of order raise
``DIMSEError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomnet.dimse.commands import Message, decode_message
from dicomnet.errors import DIMSEError
from dicomnet.pdu import PDV, encode_pdata_header

# Fragment size when the peer announces no maximum (0 = unlimited).
UNLIMITED_FRAGMENT = 1 << 20


def pdv_data_limit(max_pdu_length: int) -> int:
    """The largest PDV value (data bytes) one P-DATA-TF may carry for this maximum PDU length."""
    if max_pdu_length == 0:
        return UNLIMITED_FRAGMENT
    if max_pdu_length < 7:
        raise ValueError(f"maximum PDU length {max_pdu_length} cannot carry any data")
    return max_pdu_length - 6


def _split(
    out: list[bytes], context_id: int, data: bytes | memoryview, is_command: bool, limit: int
) -> None:
    view = memoryview(data)
    total = len(view)
    if total == 0:
        out.append(encode_pdata_header(context_id, is_command, True, 0))
        return
    pos = 0
    while pos < total:
        n = min(limit, total - pos)
        last = pos + n == total
        out.append(
            encode_pdata_header(context_id, is_command, last, n) + view[pos : pos + n].tobytes()
        )
        pos += n


def fragment_message(
    context_id: int,
    command: bytes,
    dataset: bytes | memoryview | None,
    max_pdu_length: int,
) -> list[bytes]:
    """Encoded P-DATA-TF PDUs, one PDV each: the command set, then the data set if any."""
    limit = pdv_data_limit(max_pdu_length)
    out: list[bytes] = []
    _split(out, context_id, command, True, limit)
    if dataset is not None:
        _split(out, context_id, dataset, False, limit)
    return out


@dataclass(slots=True)
class CommandReceived:
    """The last fragment of a command set arrived; ``message`` is decoded."""

    context_id: int
    message: Message


@dataclass(slots=True)
class DatasetFragment:
    """One data set fragment, passed on as received (a memoryview into the read buffer)."""

    context_id: int
    data: memoryview | bytes
    is_last: bool


class Reassembler:
    """Turns PDVs into ``CommandReceived`` and ``DatasetFragment`` events (sans-I/O)."""

    def __init__(self, max_command_length: int = 1 << 16) -> None:
        self.max_command_length = max_command_length
        self._command = bytearray()
        self._context_id: int | None = None
        self.expecting_dataset = False

    def reset(self) -> None:
        self._command = bytearray()
        self._context_id = None
        self.expecting_dataset = False

    def add(self, pdv: PDV) -> list[CommandReceived | DatasetFragment]:
        if pdv.is_command:
            if self.expecting_dataset:
                raise DIMSEError(
                    "command fragment received while the previous message's data set is incomplete"
                )
            if self._context_id is not None and pdv.context_id != self._context_id:
                raise DIMSEError(
                    f"command fragment on presentation context {pdv.context_id}, the message "
                    f"started on {self._context_id}"
                )
            if len(self._command) + len(pdv.data) > self.max_command_length:
                raise DIMSEError(f"command set larger than {self.max_command_length} bytes")
            self._context_id = pdv.context_id
            self._command += pdv.data
            if not pdv.is_last:
                return []
            raw, self._command = bytes(self._command), bytearray()
            try:
                message = decode_message(raw)
            except DIMSEError:
                self._context_id = None
                raise
            if message.has_dataset:
                self.expecting_dataset = True
            else:
                self._context_id = None
            return [CommandReceived(pdv.context_id, message)]
        if not self.expecting_dataset:
            raise DIMSEError("data set fragment received without a command announcing a data set")
        if pdv.context_id != self._context_id:
            raise DIMSEError(
                f"data set fragment on presentation context {pdv.context_id}, the message "
                f"is on {self._context_id}"
            )
        if pdv.is_last:
            self.expecting_dataset = False
            self._context_id = None
        return [DatasetFragment(pdv.context_id, pdv.data, pdv.is_last)]
