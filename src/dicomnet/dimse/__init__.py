"""dimse."""
