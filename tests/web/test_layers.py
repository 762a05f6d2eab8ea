"""dicomnet.web sits beside the DICOM layers, not on them (DESIGN.md: web never does DIMSE):
its modules import only the archive, the data set codec, UIDs, errors and each other."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).parents[2] / "src" / "dicomnet" / "web"
ALLOWED = {"archive", "dataset", "uids", "errors", "web"}


def test_web_imports_no_dimse_layer() -> None:
    modules = sorted(WEB.glob("*.py"))
    assert len(modules) > 10
    for path in [*modules, WEB.parent / "archive" / "metadata.py"]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "dicomnet":
                    assert len(parts) > 1 and parts[1] in ALLOWED, f"{path.name} imports {name}"
