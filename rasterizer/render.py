"""``render()``: the one entry point of the rasterizer, the same for every primitive and backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import backends
from .cameras import Cameras
from .registry import kind_of
from .sh import sh_to_rgb

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")


@dataclass
class RenderMeta:
    """What densification and the viewer need from a render.

    means2d: (C,N,2) screen positions; after ``loss.backward()`` its ``.grad`` holds the view-space
        positional gradient (it is a non-leaf tensor with ``retain_grad()`` when gradients are on).
    radii: (C,N,2) int32 per-axis pixel bounds (0 = culled); visibility: (C,N) bool;
    max_weight: (C,N) max blending weight over pixels; depths: (C,N) view-space depth of the centres;
    normals: (C,N,3) unit normals facing each camera, for primitives that have one (triangles), else None.
    """

    means2d: torch.Tensor
    radii: torch.Tensor
    visibility: torch.Tensor
    max_weight: torch.Tensor
    depths: torch.Tensor
    width: int
    height: int
    backend: str
    normals: Optional[torch.Tensor] = None


@dataclass
class RenderOutput:
    """colors (C,H,W,3) (None in depth-only modes; with the default black background a strided view of the
    compositing's output, so ``.reshape`` rather than ``.view`` it), alphas (C,H,W,1), depths (C,H,W,1) or None."""

    colors: Optional[torch.Tensor]
    alphas: torch.Tensor
    depths: Optional[torch.Tensor]
    meta: RenderMeta


def _is_black(bg: torch.Tensor) -> bool:
    """Whether the (C,3) background is black, checked without a device sync: a GPU tensor, or one that needs a
    gradient, counts as not black (the general formula gives the same image)."""
    return bg.device.type == "cpu" and not bg.requires_grad and bool((bg == 0).all())


def _background(background, C, ref: torch.Tensor) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=ref.dtype, device=ref.device)
    if bg.shape == (3,):
        bg = bg.expand(C, 3)
    if bg.shape != (C, 3):
        raise ValueError(f"background must be (3,) or ({C},3); got {tuple(bg.shape)}")
    return bg


@dataclass
class Rendered:
    """What a primitive pipeline hands back to ``render()``: feats (C,H,W,4) = [sum w rgb, sum w z],
    alphas (C,H,W,1), and the per-primitive meta fields (see ``RenderMeta``)."""

    feats: torch.Tensor
    alphas: torch.Tensor
    means2d: torch.Tensor
    radii: torch.Tensor
    max_weight: torch.Tensor
    depths: torch.Tensor
    normals: Optional[torch.Tensor] = None


def render(
    prims,
    cams: Cameras,
    backend: str = "auto",
    sh_degree: Optional[int] = None,
    background=None,
    render_mode: str = "RGB+ED",
    rasterize_mode: str = "classic",
    **options,
) -> RenderOutput:
    """Render primitives into a batch of cameras, differentiably.

    Args:
        prims: activated primitives, e.g. ``Gaussians`` (means (N,3), quats (N,4) wxyz, scales (N,3),
            opacities (N,), sh (N,K,3) or colors (N,3)); every type of a registered kind (``registry.py``).
        cams: ``Cameras`` with viewmats (C,4,4) world->camera (OpenCV), Ks (C,3,3), width, height.
            Gradients flow to ``cams.viewmats`` (pose refinement).
        backend: 'auto' | 'torch' | 'cpu' | 'cuda' | 'gsplat'.
        sh_degree: SH degree to use (default: all the coefficients given).
        background: (3,) or (C,3) colour added where the scene is transparent; default black.
        render_mode: 'RGB', 'D' (accumulated depth), 'ED' (expected depth), 'RGB+D' or 'RGB+ED'.
        rasterize_mode: 'classic' or 'antialiased' (Mip-Splatting's opacity compensation, Gaussians).
        options: per-primitive settings, e.g. ``eps2d``, ``near``, ``far``, ``tile_size`` for Gaussians.

    Returns:
        ``RenderOutput`` with colors (C,H,W,3), alphas (C,H,W,1), depths (C,H,W,1) or None, and meta.
    """
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    pipeline = kind_of(prims).pipeline
    ref = next(v for v in vars(prims).values() if isinstance(v, torch.Tensor))
    impl = backends.resolve(backend, ref.device)
    r = pipeline(prims, cams, impl, sh_degree, rasterize_mode, **options)
    C = len(cams)
    out_colors = None
    if "RGB" in render_mode:
        bg = None if background is None else _background(background, C, r.feats)
        if bg is None or _is_black(bg):  # the accumulated colours as they are (a view of feats, no pass over the image)
            out_colors = r.feats[..., :3]
        else:
            out_colors = r.feats[..., :3] + (1.0 - r.alphas) * bg[:, None, None, :]
    depths = None
    if render_mode.endswith("ED"):
        depths = torch.where(r.alphas > 0, r.feats[..., 3:] / r.alphas.clamp_min(1e-10), 0.0)
    elif render_mode.endswith("D"):
        depths = r.feats[..., 3:]
    meta = RenderMeta(
        means2d=r.means2d,
        radii=r.radii,
        visibility=(r.radii > 0).all(-1),
        max_weight=r.max_weight,
        depths=r.depths.detach(),
        width=cams.width,
        height=cams.height,
        backend=backends.backend_name(impl),
        normals=r.normals,
    )
    return RenderOutput(colors=out_colors, alphas=r.alphas, depths=depths, meta=meta)


def view_colors(sh, colors, centers: torch.Tensor, cams: Cameras, sh_degree: Optional[int], impl=None) -> torch.Tensor:
    """Per-view RGB (C,N,3) of primitives with SH (evaluated towards each camera) or plain colours; by the
    backend ``impl``'s compiled ``sh_to_rgb`` where it has one, else in PyTorch (``sh.py``)."""
    if sh is not None:
        degree = int(round(sh.shape[1] ** 0.5)) - 1 if sh_degree is None else sh_degree
        to_rgb = getattr(impl, "sh_to_rgb", sh_to_rgb)
        return to_rgb(sh, centers[None] - cams.centers[:, None].to(centers.dtype), degree)
    return colors[None].expand(len(cams), -1, -1)
