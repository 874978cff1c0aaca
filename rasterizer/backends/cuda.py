"""CUDA Gaussian backend: the kernels of ``csrc/cuda`` (same math headers as the CPU backend).

Same two stage functions and autograd wrappers as ``cpu.py``; the extension is built on first call and
needs a CUDA build of PyTorch plus nvcc (``rasterizer/build.py``). Inputs must be CUDA tensors.
"""

from __future__ import annotations

from .cpu import _make
from .cpu_convexes import make_convex_stages
from .types import Projection

project_gaussians, rasterize = _make("cuda")
project_convexes, rasterize_convexes = make_convex_stages("cuda")

__all__ = ["project_gaussians", "rasterize", "Projection"]

from .cpu_triangles import make_triangle_stages  # noqa: E402  (triangle stages, same extension)

project_triangles, rasterize_triangles = make_triangle_stages("cuda")
