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

from dicomnet.security.audit import Auditor, JsonLinesWriter, Node, SyslogWriter
from dicomnet.security.decisions import (
    Decision,
    RejectAnswer,
    RequestRefused,
    SecurityConfigError,
)
from dicomnet.security.guard import ServerSecurity
from dicomnet.security.limits import AssociationLimiter, parse_size
from dicomnet.security.permissions import Permissions, load_permissions
from dicomnet.security.tls import (
    DICOM_TLS_PORT,
    PeerCertificate,
    TLSSettings,
    client_context,
    server_context,
)
from dicomnet.security.users import hash_password, load_users, verify_password

__all__ = [
    "DICOM_TLS_PORT",
    "AssociationLimiter",
    "Auditor",
    "Decision",
    "JsonLinesWriter",
    "Node",
    "PeerCertificate",
    "Permissions",
    "RejectAnswer",
    "RequestRefused",
    "SecurityConfigError",
    "ServerSecurity",
    "SyslogWriter",
    "TLSSettings",
    "client_context",
    "hash_password",
    "load_permissions",
    "load_users",
    "parse_size",
    "server_context",
    "verify_password",
]
