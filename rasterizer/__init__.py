"""The rasterizer: primitives, cameras and one differentiable ``render()`` for every backend.

This is the project's ground floor: it imports nothing else from sparsesplat. Backends live in
``backends/`` (torch reference, cpu C++, cuda, gsplat); shared per-primitive math in ``csrc/<primitive>.h``.
"""

from .cameras import Cameras
from .primitives import Convexes, Gaussians, GeneralizedGaussians, Triangles
from .render import RenderMeta, RenderOutput, render
from . import render_triangles as _render_triangles  # noqa: E402,F401  (registers the triangle pipeline)
from . import render_convexes as _render_convexes  # noqa: E402,F401  (registers the convex pipeline)

__all__ = ["Cameras", "Convexes", "Gaussians", "GeneralizedGaussians", "RenderMeta", "RenderOutput", "Triangles", "render"]
