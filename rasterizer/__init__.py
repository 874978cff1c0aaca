"""The rasterizer: primitives, cameras and one differentiable ``render()`` for every backend.

This is the project's ground floor: it imports nothing else from sparsesplat. Each primitive
kind lives in ``kinds/<kind>/`` (its type, pipeline, stages per backend, kernels and PLY layout), found through
``registry.py``; ``backends/`` holds what the backends (torch reference, cpu C++, cuda, gsplat) share, ``csrc/``
the C++ every kind's kernels share.
"""

from . import kinds  # noqa: F401  (registers the built-in primitive kinds)
from .cameras import Cameras
from .primitives import Convexes, Gaussians, GeneralizedGaussians, Triangles
from .render import RenderMeta, RenderOutput, render

__all__ = ["kinds", "Cameras", "Convexes", "Gaussians", "GeneralizedGaussians", "RenderMeta", "RenderOutput", "Triangles", "render"]
