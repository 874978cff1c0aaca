"""Read a trained ``scene.ply`` of any primitive kind into primitives ``render()`` takes.

    prims = read_scene_ply(run / "scene.ply", kind="triangle")   # kind: config.yaml's `primitive`

Each kind reads its own layout (``kinds/<kind>/ply.py``), through the ``read_scene`` of its registered
``Kind`` (``registry.py``); Gaussian scenes are also read from the shared splat formats (``splat_formats``:
.spz, .splat, .compressed.ply, .sog), chosen by the file's suffix. The viewer and the benchmarks read here.
"""

from __future__ import annotations

from pathlib import Path

from .registry import KINDS


def readable_kinds() -> list[str]:
    """The kinds whose scene files can be read."""
    return [name for name, kind in KINDS.items() if kind.read_scene is not None]


def read_scene_ply(path, kind: str = "gaussian"):
    """The render-ready primitives stored in ``path`` by a run of primitive ``kind``."""
    if kind not in readable_kinds():
        raise ValueError(f"{path} holds {kind} primitives, which cannot be read here "
                         f"(readers exist for: {', '.join(readable_kinds())})")
    return KINDS[kind].read_scene(Path(path))
