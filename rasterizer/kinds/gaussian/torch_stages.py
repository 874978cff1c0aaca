"""The Gaussian stages in pure PyTorch: the readable oracle (autograd gradients, tile-bucketed, slow), and
their contract, which the compiled stages (``compiled_stages.py``) and gsplat's (``gsplat_stages.py``) follow:

- ``project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far,
  antialiased, shapes=None) -> Projection``: EWA projection, opacity-aware per-axis bounds;
- ``rasterize(means2d, conics, colors, opacities, depths, radii, width, height, tile_size, shapes=None)
  -> (feats (C,H,W,4) = [sum w rgb, sum w z], alphas (C,H,W,1), max_weight (C,N))``: 16x16 tiles,
  front-to-back compositing with the thresholds of DESIGN.md §3.

``shapes`` (GES's betas: (N,) to the projection, (C,N) to the rasterizer) turns both into GES's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ...backends.torch_tiles import ALPHA_MAX, ALPHA_MIN, composite_tiles
from ...quaternions import quat_to_rotmat

class Projection(NamedTuple):
    """Per (camera, primitive) screen-space values; culled entries have radii == 0.

    means2d (C,N,2) pixels; conics (C,N,3) [a,b,c] of the inverse 2D covariance [[a,b],[b,c]];
    depths (C,N) view-space z; opacities (C,N) effective opacity; radii (C,N,2) int32 per-axis bounds.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    radii: torch.Tensor


EXTENT_MAX = 3.33
SHAPED_EXTENT_MAX = 11.1  # GES: (2 ln 255)^(1/beta) standard deviations, exact for beta >= 1


def project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                      eps2d=0.3, near=0.01, far=1e10, antialiased=False, shapes=None) -> Projection:
    """EWA projection of N Gaussians into C cameras.

    means (N,3), quats (N,4) wxyz (any norm), scales (N,3), opacities (N,), viewmats (C,4,4), Ks (C,3,3);
    shapes (N,): GES's betas, which change only the radii (where alpha falls to 1/255), or None.
    Returns a ``Projection`` of (C,N,...) tensors; culled entries have radii 0 and zero gradient.
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C,N,3)
    x, y, z = p.unbind(-1)
    finite = (
        torch.isfinite(means).all(-1) & torch.isfinite(quats).all(-1) & torch.isfinite(scales).all(-1)
        & torch.isfinite(opacities) & (quats.norm(dim=-1) > 0)
    )
    valid = finite[None] & torch.isfinite(p).all(-1) & (z >= near) & (z <= far)
    one = torch.ones_like(z)
    z_s = torch.where(valid, z, one)
    x_s = torch.where(valid, x, 0 * one)
    y_s = torch.where(valid, y, 0 * one)

    q_s = torch.where(finite[:, None] & (quats.norm(dim=-1, keepdim=True) > 0), quats,
                      torch.tensor([1.0, 0, 0, 0], dtype=quats.dtype, device=quats.device))
    s_s = torch.where(finite[:, None], scales, torch.zeros_like(scales))
    M = quat_to_rotmat(q_s / q_s.norm(dim=-1, keepdim=True)) * s_s[:, None, :]
    cov3 = M @ M.transpose(1, 2)  # (N,3,3)
    covc = R[:, None] @ cov3[None] @ R.transpose(1, 2)[:, None]  # (C,N,3,3)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = z_s * torch.minimum(lim_xp, torch.maximum(-lim_xn, x_s / z_s))
    ty = z_s * torch.minimum(lim_yp, torch.maximum(-lim_yn, y_s / z_s))
    zero = torch.zeros_like(z_s)
    J = torch.stack(
        [fx / z_s, zero, -fx * tx / z_s**2, zero, fy / z_s, -fy * ty / z_s**2], dim=-1
    ).reshape(z.shape + (2, 3))
    cov2 = J @ covc @ J.transpose(-1, -2)  # (C,N,2,2)
    a, b, c = cov2[..., 0, 0] + eps2d, cov2[..., 0, 1], cov2[..., 1, 1] + eps2d
    det_b = a * c - b * b
    valid = valid & (det_b > 0)
    det_s = torch.where(valid, det_b, one)
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)

    opac = opacities[None].expand_as(z)
    if antialiased:
        det = cov2[..., 0, 0] * cov2[..., 1, 1] - b * b
        opac = opac * torch.sqrt(torch.clamp_min(det / det_s, 1e-20))
    opac = torch.where(valid, opac, zero)
    means2d = torch.stack([fx * x_s / z_s + cx, fy * y_s / z_s + cy], dim=-1)

    with torch.no_grad():
        o = opac.detach()
        valid = valid & (o >= ALPHA_MIN)
        reach = 2.0 * torch.log(torch.clamp_min(255.0 * o, 1.0))
        if shapes is None:
            extent = torch.clamp(torch.sqrt(reach), max=EXTENT_MAX)
        else:
            extent = torch.clamp(reach ** (1.0 / shapes.detach()[None]), max=SHAPED_EXTENT_MAX)
        rx = torch.ceil(extent * torch.sqrt(torch.where(valid, a, one)))
        ry = torch.ceil(extent * torch.sqrt(torch.where(valid, c, one)))
        mx, my = means2d.detach().unbind(-1)
        onscreen = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = valid & onscreen
        radii = torch.stack([rx, ry], dim=-1).to(torch.int32) * valid[..., None]
    keep = valid[..., None]
    return Projection(
        means2d=means2d * keep,
        conics=conics * keep,
        depths=z_s * valid,
        opacities=opac * valid,
        radii=radii,
    )


def rasterize(means2d, conics, colors, opacities, depths, radii, width, height, tile_size=16,
              max_elements: int = 1 << 24, shapes=None):
    """Composite projected Gaussians into (C,H,W,4) features [r,g,b,z], alphas (C,H,W,1), max weights (C,N)
    (tiles in chunks of about ``max_elements`` samples; see ``torch_tiles.composite_tiles``). shapes (C,N):
    GES's betas, the falloff exp(-0.5 q^(beta/2)) with q = 2 s in place of exp(-s); None for Gaussians."""

    def alpha_fn(cam, gidx, pix, valid):
        d = pix[:, :, None, :] - means2d[cam][gidx][:, None, :, :]  # (B,P,L,2)
        con = conics[cam][gidx][:, None]  # (B,1,L,3)
        s = 0.5 * (con[..., 0] * d[..., 0] ** 2 + con[..., 2] * d[..., 1] ** 2) + con[..., 1] * d[..., 0] * d[..., 1]
        if shapes is not None:  # P = 0.5 q^(beta/2), 0 at the centre (log of q kept finite for autograd)
            q = 2.0 * s
            q_safe = torch.where(q > 0, q, torch.ones_like(q))
            beta = shapes[cam][gidx][:, None]
            power = torch.where(q > 0, 0.5 * torch.exp(0.5 * beta * torch.log(q_safe)), torch.zeros_like(q))
        else:
            power = s
        alpha = torch.clamp(opacities[cam][gidx][:, None] * torch.exp(-power), max=ALPHA_MAX)
        return torch.where((s >= 0) & valid[:, None], alpha, torch.zeros_like(alpha))

    return composite_tiles(means2d, radii, depths, colors, width, height, alpha_fn, tile_size, max_elements)
