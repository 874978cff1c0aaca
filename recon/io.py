"""Safe output writing: nothing half-written is ever left under its final name."""

from __future__ import annotations

import json
from pathlib import Path

from sparsesplat.rasterizer.fileio import atomic_path

__all__ = ["atomic_path", "write_json"]


def write_json(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
