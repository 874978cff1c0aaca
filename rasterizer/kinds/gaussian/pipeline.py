"""The Gaussian pipeline of ``render()`` (DESIGN.md §3): sanitize, EWA projection, colours, tile rasterization;
GES (``GeneralizedGaussians``) the same way with its shapes handed to both stages.
"""

from __future__ import annotations

from typing import Optional

from ...backends import backend_name, kind_stages
from ...cameras import Cameras
from ...primitive_base import sanitize
from ...profiling import stage
from ...render import Rendered, view_colors
from . import compiled_stages, gsplat_stages, torch_stages
from .primitive import Gaussians, GeneralizedGaussians


# The stage functions per backend: (project_gaussians, rasterize), with the contract of torch_stages.py.
SHAPED_STAGES = {
    "torch": lambda: (torch_stages.project_gaussians, torch_stages.rasterize),
    "cpu": lambda: compiled_stages.stages("cpu"),
    "cuda": lambda: compiled_stages.stages("cuda"),
}
STAGES = {**SHAPED_STAGES, "gsplat": lambda: (gsplat_stages.project_gaussians, gsplat_stages.rasterize)}
# (gsplat has no shaped falloff: GES is drawn by the others)
# The backends whose projection culls what Gaussians.well_formed() rejects (a zero quaternion, a negative scale,
# a GES shape <= 0) with zero gradients, so that sanitize() only tests finite values for them
# (tests/test_render_reference.py and test_ges.py check it). CUDA shares the projection code, untested on a GPU.
CULLS_ILL_FORMED = {"cpu"}


def render_gaussians(prims: Gaussians, cams: Cameras, impl, sh_degree: Optional[int], rasterize_mode: str,
                     eps2d: float = 0.3, near: float = 0.01, far: float = 1e10, tile_size: int = 16) -> Rendered:
    """EWA projection of 3D Gaussians, then tile rasterization (DESIGN.md §3); GES (``GeneralizedGaussians``)
    the same way, its shapes handed to both stages (the radii, and the falloff)."""
    W, H = cams.width, cams.height
    viewmats = cams.viewmats.to(prims.means.dtype)
    Ks = cams.Ks.to(prims.means.dtype)
    g = sanitize(prims, check_well_formed=backend_name(impl) not in CULLS_ILL_FORMED)
    means, quats, scales, opac, sh, colors = g.means, g.quats, g.scales, g.opacities, g.sh, g.colors
    shapes = g.shapes if isinstance(g, GeneralizedGaussians) else None
    shaped = {} if shapes is None else {"shapes": shapes}
    if shapes is None:
        project_gaussians, rasterize = kind_stages(impl, STAGES, "Gaussians")
    else:
        project_gaussians, rasterize = kind_stages(impl, SHAPED_STAGES, "GeneralizedGaussians (GES)")
    with stage("project"):
        proj = project_gaussians(
            means, quats, scales, opac, viewmats, Ks, W, H,
            eps2d=eps2d, near=near, far=far, antialiased=rasterize_mode == "antialiased", **shaped,
        )
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    with stage("sh colors"):
        rgb = view_colors(sh, colors, means, Cameras(viewmats, Ks, W, H), sh_degree, impl)
    with stage("rasterize"):
        if shapes is not None:
            shaped["shapes"] = shapes[None].expand(len(cams), -1)
        feats, alphas, max_weight = rasterize(
            proj.means2d, proj.conics, rgb, proj.opacities, proj.depths, proj.radii, W, H, tile_size, **shaped
        )
    return Rendered(feats, alphas, proj.means2d, proj.radii, max_weight, proj.depths)
