"""dicomnet: DICOM network communication for Python, asyncio-native and streaming."""

__version__ = "0.1.0"
