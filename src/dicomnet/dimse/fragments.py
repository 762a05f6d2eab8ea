"""Framing DIMSE messages as P-DATA-TF PDUs and reassembling received PDVs
(PS3.7 §8, PS3.8 §9.3.5 and Annex E).

Rules: this is the one place that frames outgoing P-DATA (``frame_message``; the sans-I/O
``Connection.send_message`` calls it once the state table allowed the P-DATA request). One PDV
per PDU; a PDV never carries more than the peer's maximum PDU length allows (the maximum covers
the P-DATA-TF variable field, PS3.8 D.1: 4 bytes of PDV item length + 2 of header + data), and
fragments are of even length whenever the maximum allows two bytes or more (PS3.8 E.1). A data set
is never copied here: framing returns each PDU's header with the byte range of the data set it
carries, for the caller to pass its data through (h11's ``send_with_data_passthrough``). Received
command fragments are collected (a command set is small and capped); data set fragments are passed
on as they come, without copying, for the caller to stream to a file. Fragments out of order raise
``DIMSEError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomnet.dimse.commands import Message, decode_message
from dicomnet.errors import DIMSEError
from dicomnet.pdu import PDV, encode_pdata_header

# Largest PDV value we send: when the peer announces no maximum (0 = unlimited) or a larger one,
# a fragment still has to fit one buffer per PDU.
MAX_FRAGMENT = 1 << 20


def pdv_data_limit(max_pdu_length: int) -> int:
    """The largest PDV value (data bytes) one P-DATA-TF may carry for the peer's maximum PDU
    length: the maximum less the 6 bytes of PDV item header (PS3.8 D.1), rounded down to an even
    number (PS3.8 E.1: every fragment is of even length), capped at ``MAX_FRAGMENT``."""
    if max_pdu_length == 0 or max_pdu_length - 6 > MAX_FRAGMENT:
        return MAX_FRAGMENT
    if max_pdu_length < 7:
        raise ValueError(f"maximum PDU length {max_pdu_length} cannot carry any data")
    limit = max_pdu_length - 6
    # A maximum of 7 leaves one byte a PDV: odd, but the only way to honour the peer's limit.
    return limit if limit == 1 else limit & ~1


#: One PDU of a data set: its 12 header bytes (PS3.8 Table 9-22 and 9-23 up to and with the
#: message control header) and the ``[start, stop)`` range of data set bytes that follows them.
DatasetPDU = tuple[bytes, int, int]


@dataclass(slots=True)
class FramedMessage:
    """One DIMSE message framed as P-DATA-TF PDUs: ``command`` is the command set's PDUs, ready
    to write; ``dataset`` the data set's PDUs as headers and byte ranges (empty without a data
    set), for the data to be passed through from memory (``with_data``) or read from a file
    straight behind each header."""

    command: bytes
    dataset: list[DatasetPDU]
    dataset_length: int | None

    def with_data(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """Every PDU of the message, in order: the command PDUs, then each data set PDU's header
        followed by its slice of ``data`` (a view, not a copy). Join them for one write."""
        if len(data) != self.dataset_length:
            raise ValueError(
                f"data set of {len(data)} bytes for a message framed for {self.dataset_length}"
            )
        view = memoryview(data)
        out: list[bytes | memoryview] = [self.command]
        for header, start, stop in self.dataset:
            out += (header, view[start:stop])
        return out


def _pdus(context_id: int, is_command: bool, length: int, limit: int) -> list[DatasetPDU]:
    """Headers and ranges of the PDUs carrying ``length`` bytes, ``limit`` at most per PDV; an
    empty part is one empty last fragment."""
    if length <= limit:
        return [(encode_pdata_header(context_id, is_command, True, length), 0, length)]
    out = []
    for start in range(0, length, limit):
        stop = min(start + limit, length)
        header = encode_pdata_header(context_id, is_command, stop == length, stop - start)
        out.append((header, start, stop))
    return out


def frame_message(
    context_id: int, command: bytes, dataset_length: int | None, max_pdu_length: int
) -> FramedMessage:
    """Frame a message for a peer whose maximum PDU length is ``max_pdu_length`` (0 =
    unlimited): the command set's PDUs encoded, then the headers of the ``dataset_length``
    bytes of data set (None: the message has none). PS3.7 §8: the command precedes the data."""
    limit = pdv_data_limit(max_pdu_length)
    if len(command) <= limit:  # the usual case, kept short: this runs for every message
        framed = encode_pdata_header(context_id, True, True, len(command)) + command
    else:
        pdus = _pdus(context_id, True, len(command), limit)
        framed = b"".join([header + command[a:b] for header, a, b in pdus])
    dataset = [] if dataset_length is None else _pdus(context_id, False, dataset_length, limit)
    return FramedMessage(framed, dataset, dataset_length)


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
