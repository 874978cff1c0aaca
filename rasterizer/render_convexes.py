"""The convex pipeline of ``render()`` (3D Convex Splatting, DESIGN.md §3): projection of the P points,
2D hull and edge lines, then tile rasterization with the smooth logsumexp / sigmoid indicator.

Registered with ``render()`` on import (``rasterizer/__init__.py`` imports this module). The backend
module ``impl`` provides ``project_convexes`` and ``rasterize_convexes`` (``backends/torch_convexes.py``
documents both); ``gsplat`` draws Gaussians only.
"""

from __future__ import annotations

from typing import Optional

import torch

from .cameras import Cameras
from .primitives import Convexes, all_finite
from .render import Rendered, register_renderer, view_colors


def _sanitize(cv: Convexes):
    """Non-finite or degenerate convexes become fully transparent ones whose parameters get zero gradient."""
    appearance = cv.sh.flatten(1) if cv.sh is not None else cv.colors
    if all_finite(cv.points, cv.delta, cv.sigma, cv.opacities, appearance) and bool(
            ((cv.delta > 0) & (cv.sigma > 0)).all()):
        return cv.points, cv.delta, cv.sigma, cv.opacities, cv.sh, cv.colors
    ok = (
        torch.isfinite(cv.points).all(-1).all(-1) & torch.isfinite(cv.delta) & torch.isfinite(cv.sigma)
        & torch.isfinite(cv.opacities) & torch.isfinite(appearance).all(-1) & (cv.delta > 0) & (cv.sigma > 0)
    )
    if bool(ok.all()):
        return cv.points, cv.delta, cv.sigma, cv.opacities, cv.sh, cv.colors
    points = torch.where(ok[:, None, None], cv.points, torch.zeros_like(cv.points))
    delta = torch.where(ok, cv.delta, torch.ones_like(cv.delta))
    sigma = torch.where(ok, cv.sigma, torch.ones_like(cv.sigma))
    opac = torch.where(ok, cv.opacities, torch.zeros_like(cv.opacities))
    sh = None if cv.sh is None else torch.where(ok[:, None, None], cv.sh, torch.zeros_like(cv.sh))
    colors = None if cv.colors is None else torch.where(ok[:, None], cv.colors, torch.zeros_like(cv.colors))
    return points, delta, sigma, opac, sh, colors


def render_convexes(prims: Convexes, cams: Cameras, impl, sh_degree: Optional[int], rasterize_mode: str,
                    near: float = 0.01, far: float = 1e10, tile_size: int = 16) -> Rendered:
    """Project and rasterize convexes. ``rasterize_mode`` has no convex variant (antialiasing is a Gaussian
    opacity compensation) and is ignored. A convex with any point before the near plane is culled."""
    if not hasattr(impl, "project_convexes"):
        name = impl.__name__.rsplit(".", 1)[-1].replace("_backend", "")
        raise ValueError(f"the {name} rasterizer backend draws Gaussians only; use backend='cuda', 'cpu', "
                         "'torch' or 'auto' for convexes")
    W, H = cams.width, cams.height
    dt = prims.points.dtype
    viewmats, Ks = cams.viewmats.to(dt), cams.Ks.to(dt)
    points, delta, sigma, opac, sh, colors = _sanitize(prims)
    proj = impl.project_convexes(points, delta, sigma, opac, viewmats, Ks, W, H, near=near, far=far)
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    rgb = view_colors(sh, colors, points.mean(dim=1), Cameras(viewmats, Ks, W, H), sh_degree, impl)
    feats, alphas, max_weight = impl.rasterize_convexes(
        proj.means2d, proj.lines, proj.nedges, proj.sharp, rgb, proj.opacities, proj.depths, proj.radii, W, H,
        tile_size,
    )
    return Rendered(feats, alphas, proj.means2d, proj.radii, max_weight, proj.depths)


register_renderer(Convexes, render_convexes)
