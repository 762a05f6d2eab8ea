"""dicomnet: DICOM network communication for Python, asyncio-native and streaming.

The names most programs need are here: ``DicomServer`` and ``Service`` with the requests handlers
receive (``ReceivedCStore``, ``ReceivedCFind``, ...), ``DicomClient`` with the requests a client
sends (``CStoreRequest``, ``CFindRequest``, ...), ``Status`` and the A-ASSOCIATE-RJ enums.
"""

from dicomnet.client import (
    CEchoRequest,
    CFindRequest,
    CGetRequest,
    CMoveRequest,
    CStoreRequest,
    DicomClient,
    Request,
)
from dicomnet.dimse.status import Status, StatusCategory
from dicomnet.errors import (
    AssociationAborted,
    AssociationRejected,
    DicomNetError,
    DicomTimeoutError,
    DIMSEError,
    LocalProtocolError,
    NegotiationError,
    PDUError,
    RemoteProtocolError,
)
from dicomnet.negotiation import AssociationRequest, PresentationContext, ProposedContext
from dicomnet.pdu import PresentationContextResult
from dicomnet.pdu import RejectReason as Reason
from dicomnet.pdu import RejectResult as Reject
from dicomnet.pdu import RejectSource as Source
from dicomnet.server import DicomServer, ServerLimits
from dicomnet.service import (
    AssociationInfo,
    ReceivedCEcho,
    ReceivedCFind,
    ReceivedCGet,
    ReceivedCMove,
    ReceivedCStore,
    ReceivedN,
    Response,
    Service,
)

__version__ = "0.1.0"

__all__ = [
    "AssociationAborted",
    "AssociationInfo",
    "AssociationRejected",
    "AssociationRequest",
    "CEchoRequest",
    "CFindRequest",
    "CGetRequest",
    "CMoveRequest",
    "CStoreRequest",
    "DIMSEError",
    "DicomClient",
    "DicomNetError",
    "DicomServer",
    "DicomTimeoutError",
    "LocalProtocolError",
    "NegotiationError",
    "PDUError",
    "PresentationContext",
    "PresentationContextResult",
    "ProposedContext",
    "Reason",
    "ReceivedCEcho",
    "ReceivedCFind",
    "ReceivedCGet",
    "ReceivedCMove",
    "ReceivedCStore",
    "ReceivedN",
    "Reject",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ServerLimits",
    "Service",
    "Source",
    "Status",
    "StatusCategory",
]
