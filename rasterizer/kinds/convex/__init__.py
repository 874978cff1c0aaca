"""Convexes (3D Convex Splatting): the smoothed 2D hull of P projected points.

``primitive.py``, ``pipeline.py``, ``torch_stages.py`` (contract and oracle), ``compiled_stages.py``,
``convex.h`` with ``convex_*.cpp`` / ``convex_*.cu``, ``ply.py`` (the scene layout).
"""

from ...registry import Kind, register
from .pipeline import render_convexes
from .primitive import Convexes


def _read(path):
    from .ply import load_convexes_ply

    return load_convexes_ply(path)


CONVEX = register(Kind("convex", (Convexes,), render_convexes, _read))

__all__ = ["CONVEX", "Convexes"]
