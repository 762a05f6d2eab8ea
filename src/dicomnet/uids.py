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


# Query/Retrieve SOP classes (PS3.4 §C.6, §C.4).
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
# Patient/Study Only (retired in PS3.4, still offered by DCMTK's dcmqrscp).
PATIENT_STUDY_ONLY_FIND = "1.2.840.10008.5.1.4.1.2.3.1"
PATIENT_STUDY_ONLY_MOVE = "1.2.840.10008.5.1.4.1.2.3.2"
PATIENT_STUDY_ONLY_GET = "1.2.840.10008.5.1.4.1.2.3.3"

#: Query/Retrieve information models (PS3.4 §C.6): name -> (FIND, MOVE, GET) SOP class UIDs.
#: Modality Worklist Information Model - FIND (PS3.4 K.6.1.2): a C-FIND model without levels.
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"

QR_MODELS: dict[str, tuple[str, str, str]] = {
    "patient": (PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET),
    "study": (STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET),
    "patient-study": (PATIENT_STUDY_ONLY_FIND, PATIENT_STUDY_ONLY_MOVE, PATIENT_STUDY_ONLY_GET),
}

# Storage SOP classes proposed for C-GET by default (with the SCP role for us): the common
# image classes with uncompressed and with compressed transfer syntaxes, the others uncompressed.
GET_IMAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # MG for processing
    "1.2.840.10008.5.1.4.1.1.1.3",  # intra-oral X-ray
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # enhanced CT
    "1.2.840.10008.5.1.4.1.1.3.1",  # US multi-frame
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture
    "1.2.840.10008.5.1.4.1.1.7.1",  # multi-frame single bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # multi-frame grayscale byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # multi-frame grayscale word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # multi-frame true color SC
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # enhanced XA
    "1.2.840.10008.5.1.4.1.1.12.2",  # XRF
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # breast tomosynthesis
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL endoscopic
    "1.2.840.10008.5.1.4.1.1.77.1.2",  # VL microscopic
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL photographic
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # ophthalmic photography 8 bit
    "1.2.840.10008.5.1.4.1.1.77.1.6",  # VL whole slide microscopy
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.130",  # enhanced PET
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT image
)
GET_OTHER_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.4.2",  # MR spectroscopy
    "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG
    "1.2.840.10008.5.1.4.1.1.9.1.2",  # general ECG
    "1.2.840.10008.5.1.4.1.1.11.1",  # grayscale softcopy presentation state
    "1.2.840.10008.5.1.4.1.1.11.2",  # color softcopy presentation state
    "1.2.840.10008.5.1.4.1.1.66",  # raw data
    "1.2.840.10008.5.1.4.1.1.66.1",  # spatial registration
    "1.2.840.10008.5.1.4.1.1.66.4",  # segmentation
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.88.11",  # basic text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # key object selection
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-ray radiation dose SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT ion plan
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
