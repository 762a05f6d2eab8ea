"""The DICOMweb server's settings: one dataclass, filled from keyword arguments or from the
``[web]`` table of ``dicomnet serve``'s TOML file.

Rules: every setting has a safe default (loopback, no CORS beyond the same origin, bounded
uploads and queries); ``from_mapping`` names the setting that is wrong and refuses unknown ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["WebConfig", "DEFAULT_HTTP_PORT", "DEFAULT_OHIF_DIR", "VIEWERS"]

#: The HTTP port beside DICOM's 11112 (Orthanc's).
DEFAULT_HTTP_PORT = 8042
#: Where ``make ohif`` unpacks the prebuilt OHIF viewer (relative to the current folder).
DEFAULT_OHIF_DIR = "ohif/dist"
#: Viewers ``viewer`` can name.
VIEWERS = ("ohif",)

_URL_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/]*)?$")


@dataclass(slots=True)
class WebConfig:
    """Settings of the DICOMweb server.

    ``public_url`` is the URL clients reach the server at (e.g. ``https://pacs.example/``):
    RetrieveURL and BulkDataURI are built from it; without it they are built from the request's
    Host header when it is a plain host name or address (``allowed_hosts`` limits which), else
    from the listening address. Forwarded and X-Forwarded-* headers are never trusted.
    ``cors_origins``: origins (``https://viewer.example``) allowed to call from a browser page
    of another origin; ``"*"`` allows any (never with credentials). Empty: same origin only.
    ``viewer``: ``"ohif"`` serves a prebuilt OHIF viewer at ``/viewer`` from ``viewer_dir``
    (default ``ohif/dist``, where ``make ohif`` puts it); ``viewer_dir`` alone implies it.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    #: QIDO: results when no ``limit`` is given, and the most a ``limit`` can ask for.
    qido_default_limit: int = 1000
    qido_max_limit: int = 10000
    #: STOW: bytes in one request body, instances in one request, bytes of one part's headers.
    max_stow_bytes: int = 4 << 30
    max_stow_parts: int = 10000
    max_part_header_bytes: int = 16384
    #: Seconds a STOW body may stay silent before the request is dropped (slow senders).
    body_timeout: float = 60.0
    #: Frames in one frames request.
    max_frames_per_request: int = 1000
    #: Rendered images: largest output side, and the largest source image (pixels) rendered.
    max_render_side: int = 4096
    max_render_pixels: int = 100_000_000
    viewer: str | None = None
    viewer_dir: str | None = None
    fsync: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.public_url is not None:
            url = self.public_url.rstrip("/")
            if not _URL_RE.match(url):
                raise ValueError(f"public_url {self.public_url!r} is not an http(s) URL")
            self.public_url = url
        self.allowed_hosts = tuple(str(h).lower() for h in self.allowed_hosts)
        self.cors_origins = tuple(str(o).rstrip("/") for o in self.cors_origins)
        for name in (
            "qido_default_limit",
            "qido_max_limit",
            "max_stow_bytes",
            "max_stow_parts",
            "max_part_header_bytes",
            "max_frames_per_request",
            "max_render_side",
            "max_render_pixels",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.qido_default_limit > self.qido_max_limit:
            raise ValueError("qido_default_limit is larger than qido_max_limit")
        if self.viewer in ("", "none"):
            self.viewer = None
        if self.viewer is not None and self.viewer not in VIEWERS:
            raise ValueError(f"viewer {self.viewer!r}: one of {', '.join(VIEWERS)} or none")
        if self.viewer_dir is not None:
            self.viewer_dir = str(self.viewer_dir)
            self.viewer = self.viewer or "ohif"
        elif self.viewer == "ohif":
            self.viewer_dir = DEFAULT_OHIF_DIR
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> WebConfig:
        """A config from a TOML ``[web]`` table (keys with ``-`` or ``_``); ValueError names an
        unknown key or a wrong value."""
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ValueError(
                    f"[web]: unknown setting {key!r}; known: {', '.join(sorted(known))}"
                )
            if name in ("allowed_hosts", "cors_origins"):
                value = (value,) if isinstance(value, str) else tuple(value)
            kwargs[name] = value
        return cls(**kwargs)
