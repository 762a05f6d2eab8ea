"""Which transfer syntax a stored instance can be sent in, and the conversion (PS3.18 §8.7.3.5).

One job: answer "can this file go out in syntax T?" and produce it. Between the uncompressed
syntaxes (Implicit VR LE, Explicit VR LE and BE, Deflated Explicit VR LE) the data set is
re-encoded here with ``dicomnet.dataset`` (pydicom reads, ``encode_dataset`` writes, swapping
OW/OF/... words when the byte order changes). Everything else (decompressing or compressing pixel
data) is the job of a codec module registered with ``set_codec``: until one is registered such a
request is not acceptable (406), never an error.

The hook: ``set_codec(codec)`` with an object that has ``can_convert(source, target) -> bool``,
``convert_file(path, target) -> bytes`` (a whole Part 10 file) and ``convert_frame(frame,
source, target, info) -> bytes`` (one frame's bytes; ``info`` the instance's Fragment).
"""

from __future__ import annotations

import io
import os
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from dicomnet.dataset import encode_dataset

__all__ = ["Codec", "UNCOMPRESSED", "can_convert", "convert_file", "set_codec", "codec"]

UNCOMPRESSED = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    }
)


class Codec(Protocol):
    """What a pixel data codec module provides to the DICOMweb server."""

    def can_convert(self, source: str, target: str) -> bool: ...

    def convert_file(self, path: str | os.PathLike[str], target: str) -> bytes: ...

    def convert_frame(self, frame: bytes, source: str, target: str, info: Any) -> bytes: ...


_codec: Codec | None = None


def set_codec(value: Codec | None) -> None:
    """Register (or remove, with None) the codec used for compressed transfer syntaxes."""
    global _codec
    _codec = value


def codec() -> Codec | None:
    return _codec


def can_convert(source: str, target: str) -> bool:
    """Whether a file stored in ``source`` can be sent in ``target``."""
    if source == target:
        return True
    if source in UNCOMPRESSED and target in UNCOMPRESSED:
        return True
    return _codec is not None and _codec.can_convert(source, target)


def convert_file(path: str | os.PathLike[str], source: str, target: str) -> bytes:
    """The Part 10 file at ``path`` (stored in ``source``) re-encoded in ``target``; call only
    when ``can_convert`` says yes. Reads the whole instance (run it in a worker thread)."""
    if source in UNCOMPRESSED and target in UNCOMPRESSED:
        ds = dcmread(path)
        meta = FileMetaDataset(ds.file_meta)
        meta.TransferSyntaxUID = UID(target)
        out = io.BytesIO()
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(out), meta, enforce_standard=True)
        out.write(encode_dataset(ds, target))
        return out.getvalue()
    if _codec is None:
        raise ValueError(f"no codec converts {source} to {target}")
    return _codec.convert_file(path, target)
