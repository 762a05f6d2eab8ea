"""Well-known UIDs and the transfer syntax groups a service offers (PS3.6 Annex A).

Everything here is derived from pydicom's UID dictionary, so new storage SOP classes appear when
pydicom learns them.
"""

from __future__ import annotations

import re
from functools import cache

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

VERIFICATION = "1.2.840.10008.1.1"
DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# dicomnet's implementation identity (PS3.7 D.3.3.2, D.3.3.3).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1472.1"
IMPLEMENTATION_VERSION_NAME = "DICOMNET_010"

UNCOMPRESSED: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

# The order in fo-dicom's storage SCP sample: lossless first, then lossy, then uncompressed.
IMAGE_SYNTAXES: tuple[str, ...] = (
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    *UNCOMPRESSED,
)

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: str) -> bool:
    """True for a syntactically valid UID (PS3.5 §9.1): digits and dots, no leading zeros,
    at most 64 characters. Such a value is also safe as a file name."""
    return 0 < len(value) <= 64 and _UID_RE.fullmatch(value) is not None


@cache
def all_transfer_syntaxes() -> tuple[str, ...]:
    """Every transfer syntax pydicom's dictionary names (retired ones included)."""
    return tuple(uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax")


@cache
def storage_sop_classes() -> frozenset[str]:
    """Every storage SOP class in the dictionary (names containing "Storage", except the
    storage commitment classes)."""
    return frozenset(
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name and "Commitment" not in name
    )


def is_storage(uid: str) -> bool:
    """True for a storage SOP class (PS3.4 Annex B)."""
    return uid in storage_sop_classes()


def uid_name(uid: str) -> str:
    """The dictionary name of a UID, or the UID itself when unknown."""
    entry = UID_dictionary.get(uid)
    return entry[0] if entry else uid
