"""Triangles (Triangle Splatting): a solid triangle under a smooth window function.

``primitive.py``, ``pipeline.py``, ``torch_stages.py`` (contract and oracle), ``compiled_stages.py``,
``triangle.h`` with ``triangle_*.cpp`` / ``triangle_*.cu``, ``ply.py`` (the scene layout, and the mesh export).
"""

from ...registry import Kind, register
from .pipeline import render_triangles
from .primitive import Triangles


def _read(path):
    from .ply import load_triangles_ply

    return load_triangles_ply(path).activated()


TRIANGLE = register(Kind("triangle", (Triangles,), render_triangles, _read))

__all__ = ["TRIANGLE", "Triangles"]
