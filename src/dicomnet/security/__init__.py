"""Security building blocks for a DICOM node (issue 11): TLS contexts, user identity, per-peer
permissions, the audit trail and resource limits.

Rules: every decision is a pure function from what the peer sent plus a policy to an allowed /
refused answer with its reason and the standard's way of saying no (an A-ASSOCIATE-RJ result,
source and reason, or a refused DIMSE status). Nothing here sends a PDU or touches an association:
the server asks, then answers. Only ``tls`` (``ssl`` contexts, reading a transport's peer
certificate) and the writers in ``audit`` do I/O. Passwords and pixel data never reach a log
line or an audit record.

Modules: ``decisions`` (the shared answer types), ``tls``, ``users``, ``permissions``, ``audit``,
``limits``; ``guard`` joins them into what ``DicomServer`` asks at each step of an association
(``ServerSecurity``), the only module here that knows the order of those steps.
"""

from __future__ import annotations

from dicomnet.security.decisions import (
    Decision,
    RejectAnswer,
    RequestRefused,
    SecurityConfigError,
)

__all__ = ["Decision", "RejectAnswer", "RequestRefused", "SecurityConfigError"]
