"""DICOMweb (PS3.18) over dicomnet's archive: QIDO-RS, WADO-RS, WADO-URI and STOW-RS on the same
storage folder, index and event loop as the DICOM server.

``create_app(config, storage, index)`` gives the aiohttp application; ``WebServer(app, host,
port)`` runs it on the running event loop (``await start()`` / ``await close()``), beside a
``DicomServer``. ``python -m dicomnet.web STORAGE`` serves a storage folder on its own.
Needs the ``web`` extra (aiohttp, orjson; Pillow and numpy for rendered images).
"""

from __future__ import annotations

from dicomnet.web.app import WebServer, create_app
from dicomnet.web.config import DEFAULT_HTTP_PORT, WebConfig

__all__ = ["DEFAULT_HTTP_PORT", "WebConfig", "WebServer", "create_app"]
