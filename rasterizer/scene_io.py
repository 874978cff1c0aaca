"""Read a trained ``scene.ply`` of any primitive kind into primitives ``render()`` takes.

    prims = read_scene_ply(run / "scene.ply", kind="triangle")   # kind: config.yaml's `primitive`

Each kind has its own PLY layout (``ply``: the standard 3DGS layout, GES with one more property; ``triangle_io``;
``ply_convexes``);
Gaussian scenes are also read from the shared splat formats (``splat_formats``: .spz, .splat, .compressed.ply,
.sog), chosen by the file's suffix;
a new kind registers its reader with ``register_scene_reader``. The viewer and the benchmarks read through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def _gaussians(path):
    from .splat_formats import read_splats  # the 3DGS PLY, or .spz, .splat, .compressed.ply, .sog by suffix

    return read_splats(path).activated()


def _triangles(path):
    from .triangle_io import load_triangles_ply

    return load_triangles_ply(path).activated()


def _convexes(path):
    from .ply_convexes import load_convexes_ply

    return load_convexes_ply(path)


def _ges(path):
    from .ply import load_gaussians_ply
    from .primitives import GeneralizedGaussians

    g = load_gaussians_ply(path)
    if not isinstance(g, GeneralizedGaussians):
        raise ValueError(f"{path} holds no GES shapes (the vertex property 'beta'): it is a Gaussian scene")
    return g


SCENE_READERS: dict[str, Callable] = {"gaussian": _gaussians, "ges": _ges, "triangle": _triangles,
                                      "convex": _convexes}


def register_scene_reader(kind: str, reader: Callable) -> None:
    """Make ``read_scene_ply(path, kind)`` call ``reader(path) -> primitives`` (activated, render-ready)."""
    SCENE_READERS[kind] = reader


def read_scene_ply(path, kind: str = "gaussian"):
    """The render-ready primitives stored in ``path`` by a run of primitive ``kind``."""
    if kind not in SCENE_READERS:
        raise ValueError(f"{path} holds {kind} primitives, which cannot be read here "
                         f"(readers exist for: {', '.join(SCENE_READERS)})")
    return SCENE_READERS[kind](Path(path))
