"""The convex pipeline of ``render()`` (3D Convex Splatting, DESIGN.md §3): projection of the P points,
2D hull and edge lines, then tile rasterization with the smooth logsumexp / sigmoid indicator.

The stage functions per backend (``STAGES``): ``torch_stages.py`` (the contract and the oracle) and
``compiled_stages.py`` (cpu, cuda).
"""

from __future__ import annotations

from typing import Optional

from ...backends import kind_stages
from ...cameras import Cameras
from ...primitive_base import sanitize
from ...render import Rendered, view_colors
from . import compiled_stages, torch_stages
from .primitive import Convexes


STAGES = {
    "torch": lambda: (torch_stages.project_convexes, torch_stages.rasterize_convexes),
    "cpu": lambda: compiled_stages.stages("cpu"),
    "cuda": lambda: compiled_stages.stages("cuda"),
}

def render_convexes(prims: Convexes, cams: Cameras, impl, sh_degree: Optional[int], rasterize_mode: str,
                    near: float = 0.01, far: float = 1e10, tile_size: int = 16) -> Rendered:
    """Project and rasterize convexes. ``rasterize_mode`` has no convex variant (antialiasing is a Gaussian
    opacity compensation) and is ignored. A convex with any point before the near plane is culled."""
    project_convexes, rasterize_convexes = kind_stages(impl, STAGES, "convexes")
    W, H = cams.width, cams.height
    dt = prims.points.dtype
    viewmats, Ks = cams.viewmats.to(dt), cams.Ks.to(dt)
    cv = sanitize(prims)
    points, delta, sigma, opac, sh, colors = cv.points, cv.delta, cv.sigma, cv.opacities, cv.sh, cv.colors
    proj = project_convexes(points, delta, sigma, opac, viewmats, Ks, W, H, near=near, far=far)
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    rgb = view_colors(sh, colors, points.mean(dim=1), Cameras(viewmats, Ks, W, H), sh_degree, impl)
    feats, alphas, max_weight = rasterize_convexes(
        proj.means2d, proj.lines, proj.nedges, proj.sharp, rgb, proj.opacities, proj.depths, proj.radii, W, H,
        tile_size,
    )
    return Rendered(feats, alphas, proj.means2d, proj.radii, max_weight, proj.depths)

