"""The triangle pipeline of ``render()`` (Triangle Splatting, DESIGN.md §3): sanitize, project and cull,
colour from SH at the centroid, tile rasterization with the incentre-normalized window function.

The stage functions per backend (``STAGES``): ``torch_stages.py`` (the contract and the oracle) and
``compiled_stages.py`` (cpu, cuda).
"""

from __future__ import annotations

from typing import Optional

import torch

from ...backends import kind_stages
from ...cameras import Cameras
from ...primitive_base import sanitize
from ...render import Rendered, view_colors
from . import compiled_stages, torch_stages
from .primitive import Triangles


STAGES = {
    "torch": lambda: (torch_stages.project_triangles, torch_stages.rasterize_triangles),
    "cpu": lambda: compiled_stages.stages("cpu"),
    "cuda": lambda: compiled_stages.stages("cuda"),
}

def facing_normals(vertices: torch.Tensor, cams: Cameras) -> torch.Tensor:
    """Unit normals (C,N,3) of triangles (N,3,3), flipped per camera to face it (differentiable)."""
    n = torch.linalg.cross(vertices[:, 1] - vertices[:, 0], vertices[:, 2] - vertices[:, 0], dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    to_cam = cams.centers.to(n.dtype)[:, None, :] - vertices.mean(1)[None]
    sign = torch.where((n[None] * to_cam).sum(-1, keepdim=True) >= 0, 1.0, -1.0)
    return n[None] * sign


def render_triangles(prims: Triangles, cams: Cameras, impl, sh_degree: Optional[int], rasterize_mode: str,
                     near: float = 0.01, far: float = 1e10, tile_size: int = 16) -> Rendered:
    """Project, cull and bound triangles, then composite them in tiles.

    ``meta.means2d`` is the projected centroid; its ``.grad`` after backward is the gradient of the loss
    w.r.t. a screen-space translation of the whole triangle (what densification accumulates).
    """
    project_triangles, rasterize_triangles = kind_stages(impl, STAGES, "triangles")
    if rasterize_mode != "classic":
        raise ValueError("rasterize_mode='antialiased' applies to Gaussians only; triangles use 'classic'")
    W, H = cams.width, cams.height
    dt = prims.vertices.dtype
    viewmats, Ks = cams.viewmats.to(dt), cams.Ks.to(dt)
    t = sanitize(prims)
    verts, sigma, opac, sh, colors = t.vertices, t.sigma, t.opacities, t.sh, t.colors
    proj = project_triangles(verts, sigma, opac, viewmats, Ks, W, H, near=near, far=far)
    vis = (proj.radii > 0).all(-1)
    # A leaf whose gradient is the sum of the three vertices' screen gradients (translation of the triangle),
    # added as zero so the values and the vertices' own gradients are unchanged.
    means2d = proj.means2d.detach().requires_grad_(torch.is_grad_enabled() and proj.verts2d.requires_grad)
    verts2d = proj.verts2d + (means2d - means2d.detach())[..., None, :]
    rgb = view_colors(sh, colors, verts.mean(1), Cameras(viewmats, Ks, W, H), sh_degree, impl)
    zero = torch.zeros((), dtype=dt, device=verts.device)
    sig = torch.where(vis, sigma[None], zero)
    o = torch.where(vis, opac[None], zero)
    feats, alphas, max_weight = rasterize_triangles(
        verts2d, sig, rgb, o, proj.depths, proj.bounds, proj.radii, W, H, tile_size
    )
    normals = facing_normals(verts, Cameras(viewmats, Ks, W, H))
    return Rendered(feats, alphas, means2d, proj.radii, max_weight, proj.depths, normals=normals)

