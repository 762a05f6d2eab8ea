"""Where the frames of a Part 10 file's Pixel Data are, without reading them: the item table of
encapsulated Pixel Data (PS3.5 §A.4) and the frame geometry of native Pixel Data (PS3.5 §8.1.1).

Rules: reads item headers only (8 bytes each) through ``pread``-style access, so an index of a
multi-gigabyte instance costs a few bytes per fragment; every inconsistency (an item tag missing,
a length past the end of the file, a Basic or Extended Offset Table that does not point at item
boundaries, a frame count that does not match) raises ``TranscodeError`` naming the offset.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.uid import RLELossless

from dicomnet.errors import TranscodeError

_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little endian 32-bit number
_SEQUENCE_DELIMITER = 0xE0DDFFFE  # (FFFE,E0DD)
_UNDEFINED = 0xFFFFFFFF

Reader = Callable[[int, int], bytes]  # (offset, length) -> bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """One fragment item: where its value starts in the file and how long it is."""

    offset: int
    length: int

    @property
    def item_offset(self) -> int:
        return self.offset - 8


@dataclass(frozen=True, slots=True)
class Encapsulated:
    """The items of encapsulated Pixel Data (PS3.5 §A.4): the Basic Offset Table's entries, the
    fragments, and the file offset just after the sequence delimiter."""

    basic_offsets: tuple[int, ...]
    fragments: tuple[Fragment, ...]
    end: int
    first_fragment_item: int  # file offset of the first fragment's item tag (offsets count from it)


def read_items(read: Reader, start: int, file_size: int) -> Encapsulated:
    """Index the items of encapsulated Pixel Data whose value starts at ``start`` (just after
    the (7FE0,0010) OB header of undefined length)."""

    def header(pos: int, what: str) -> tuple[int, int]:
        raw = read(pos, 8)
        if len(raw) < 8:
            raise TranscodeError(
                f"encapsulated Pixel Data ends at byte {file_size} before its sequence "
                f"delimiter (expected {what} at offset {pos})"
            )
        tag, length = struct.unpack("<II", raw)
        return tag, length

    tag, length = header(start, "the Basic Offset Table item")
    if tag != _ITEM:
        raise TranscodeError(
            f"encapsulated Pixel Data must start with the Basic Offset Table item (FFFE,E000) "
            f"(PS3.5 A.4), found {_tag_text(tag)} at offset {start}"
        )
    if length == _UNDEFINED or length % 4 or start + 8 + length > file_size:
        raise TranscodeError(
            f"Basic Offset Table item at offset {start} has an impossible length {length}"
        )
    table = read(start + 8, length) if length else b""
    offsets = struct.unpack(f"<{length // 4}I", table) if length else ()
    pos = start + 8 + length
    first = pos
    fragments: list[Fragment] = []
    while True:
        tag, length = header(pos, "an item or the sequence delimiter")
        if tag == _SEQUENCE_DELIMITER:
            pos += 8
            break
        if tag != _ITEM:
            raise TranscodeError(
                f"expected a fragment item (FFFE,E000) or the sequence delimiter (FFFE,E0DD) "
                f"at offset {pos} of the Pixel Data, found {_tag_text(tag)}"
            )
        if length == _UNDEFINED:
            raise TranscodeError(f"fragment item at offset {pos} has undefined length")
        if pos + 8 + length > file_size:
            raise TranscodeError(
                f"fragment {len(fragments) + 1} at offset {pos} claims {length} bytes, past "
                f"the end of the file ({file_size} bytes)"
            )
        fragments.append(Fragment(pos + 8, length))
        pos += 8 + length
    return Encapsulated(tuple(offsets), tuple(fragments), pos, first)


def _tag_text(value: int) -> str:
    return f"({value & 0xFFFF:04X},{value >> 16:04X})"


# Frame start markers: JPEG SOI (PS3.5 §8.2.1, JPEG-LS too), J2K SOC+SIZ, a JP2 signature box.
_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def frame_fragments(
    items: Encapsulated,
    number_of_frames: int,
    transfer_syntax: str,
    read: Reader,
    extended: tuple[Sequence[int], Sequence[int]] | None = None,
) -> list[tuple[Fragment, ...]]:
    """The fragments of each frame (PS3.5 §A.4): from the Extended Offset Table when there is
    one, else the Basic Offset Table, else one fragment per frame, else (one frame) all of them,
    else by the codestreams' start markers. RLE is one fragment per frame (PS3.5 G.1)."""
    fragments = items.fragments
    if number_of_frames < 1:
        raise TranscodeError(f"Number of Frames is {number_of_frames}")
    if not fragments:
        raise TranscodeError("encapsulated Pixel Data holds no fragment")
    starts = {f.item_offset - items.first_fragment_item: i for i, f in enumerate(fragments)}
    if extended is not None:
        table, _lengths = extended
        return _by_offsets(
            list(table), starts, fragments, number_of_frames, "Extended Offset Table"
        )
    if items.basic_offsets:
        return _by_offsets(
            list(items.basic_offsets), starts, fragments, number_of_frames, "Basic Offset Table"
        )
    if len(fragments) == number_of_frames:
        return [(f,) for f in fragments]
    if number_of_frames == 1:
        return [fragments]
    if len(fragments) < number_of_frames or transfer_syntax == RLELossless:
        raise TranscodeError(
            f"Number of Frames is {number_of_frames} but the Pixel Data holds "
            f"{len(fragments)} fragments and no offset table"
        )
    frames: list[list[Fragment]] = []
    for fragment in fragments:
        head = read(fragment.offset, 12)
        if head.startswith(_STARTS) or not frames:
            frames.append([fragment])
        else:
            frames[-1].append(fragment)
    if len(frames) != number_of_frames:
        raise TranscodeError(
            f"Number of Frames is {number_of_frames} but the {len(fragments)} fragments hold "
            f"{len(frames)} codestreams (no offset table to tell them apart)"
        )
    return [tuple(f) for f in frames]


def _by_offsets(
    offsets: list[int],
    starts: dict[int, int],
    fragments: Sequence[Fragment],
    number_of_frames: int,
    table: str,
) -> list[tuple[Fragment, ...]]:
    if len(offsets) != number_of_frames:
        raise TranscodeError(
            f"the {table} has {len(offsets)} entries but Number of Frames is {number_of_frames}"
        )
    indexes: list[int] = []
    for n, offset in enumerate(offsets):
        index = starts.get(offset)
        if index is None:
            raise TranscodeError(
                f"{table} entry {n + 1} ({offset}) does not point at a fragment item "
                f"(the table lies, PS3.5 A.4)"
            )
        if indexes and index <= indexes[-1]:
            raise TranscodeError(f"{table} entries are not increasing at entry {n + 1}")
        indexes.append(index)
    if indexes[0] != 0:
        raise TranscodeError(f"the {table}'s first entry is {offsets[0]}, not 0")
    bounds = [*indexes, len(fragments)]
    return [tuple(fragments[bounds[i] : bounds[i + 1]]) for i in range(number_of_frames)]


def read_frame(read: Reader, fragments: Sequence[Fragment]) -> bytes:
    """The codestream of one frame: its fragments' values joined."""
    if len(fragments) == 1:
        f = fragments[0]
        return read(f.offset, f.length)
    return b"".join(read(f.offset, f.length) for f in fragments)


def native_frame_length(
    rows: int, columns: int, samples_per_pixel: int, bits_allocated: int
) -> tuple[int, int]:
    """(bits, bytes) of one native frame (PS3.5 §8.1.1); with Bits Allocated 1 frames may end
    inside a byte, which the bytes count rounds up."""
    bits = rows * columns * samples_per_pixel * bits_allocated
    return bits, (bits + 7) // 8
