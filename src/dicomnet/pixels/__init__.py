"""Transfer syntax conversion (PS3.5 §8, §10, Annex A): re-encoding between the native syntaxes,
decompressing and compressing through pydicom's pixel data plugins, frame by frame, off the event
loop; the choice of a presentation context for a file among those a peer accepted.

Rules: never DIMSE or sockets; never silently lossy; the source file is never altered. The
codecs come with the ``codecs`` extra (``pip install 'dicomnet[codecs]'``); without it
``capabilities()`` says which package each transfer syntax needs.
"""

from dicomnet.errors import TranscodeError
from dicomnet.pixels.policy import (
    ContextChoice,
    TranscodePolicy,
    choose_context,
    proposed_contexts,
    storage_contexts,
    storage_plan,
)
from dicomnet.pixels.pool import TranscodePool, transcode_file_async
from dicomnet.pixels.syntaxes import (
    ALIASES,
    NATIVE,
    Capability,
    Target,
    as_target,
    can_decode,
    can_encode,
    capabilities,
    capability,
)
from dicomnet.pixels.transcode import (
    Action,
    FileProbe,
    TranscodeResult,
    classify,
    convert_for_storage,
    dataset_mislabelled,
    probe_file,
    transcode_file,
)

__all__ = [
    "ALIASES",
    "NATIVE",
    "Action",
    "Capability",
    "ContextChoice",
    "FileProbe",
    "Target",
    "TranscodeError",
    "TranscodePolicy",
    "TranscodePool",
    "TranscodeResult",
    "as_target",
    "can_decode",
    "can_encode",
    "capabilities",
    "capability",
    "choose_context",
    "classify",
    "convert_for_storage",
    "dataset_mislabelled",
    "probe_file",
    "proposed_contexts",
    "storage_contexts",
    "storage_plan",
    "transcode_file",
    "transcode_file_async",
]
