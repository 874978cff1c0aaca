"""Pure-PyTorch triangle backend (Triangle Splatting): the readable oracle, autograd gradients, slow.

Two stage functions, as every backend provides for triangles:

- ``project_triangles(vertices, sigmas, opacities, viewmats, Ks, width, height, near, far)
  -> TriangleProjection`` (see ``types.py``);
- ``rasterize_triangles(verts2d, sigmas, colors, opacities, depths, bounds, radii, width, height, tile_size)
  -> (feats (C,H,W,4) = [sum w rgb, sum w z], alphas (C,H,W,1), max_weight (C,N))``.

The window function (DESIGN.md §3) is written in the incentre-relative form the compiled kernels use
(``triangle.h``): with e_k = v_{k+1} - v_k, l_k = |e_k|, P = l_0 + l_1 + l_2, A2 = cross(e_0, e_1)
(twice the signed area) and s the incentre,

    q_k(p) = 1 + (P / (l_k A2)) cross(e_k, p - s)    (= -L_k(p) / r: 1 at s, 0 on edge k)
    K(p)   = max(0, min_k q_k(p))^sigma,  zero where min_k q_k <= 0.

The pixels where ``opacity * K >= 1/255`` are those with min_k q_k >= t = (255 opacity)^(-1/sigma): the
triangle shrunk about its incentre by (1 - t); its bounding box (plus a rounding margin) is the bound.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ...backends.torch_tiles import ALPHA_MAX, ALPHA_MIN, composite_tiles

COS_MIN = 1e-3  # triangles seen closer to edge-on than this are culled


class TriangleProjection(NamedTuple):
    """Per (camera, triangle) screen-space values; culled entries have radii == 0 and zeros elsewhere.

    verts2d (C,N,3,2) pixels; depths (C,N) view depth of the centroid; means2d (C,N,2) projected centroid
    (no gradient); bounds (C,N,4) [xmin, ymin, xmax, ymax] pixel box holding every pixel centre where alpha
    can reach 1/255; radii (C,N,2) int32 per-axis extent of that box around means2d.
    """

    verts2d: torch.Tensor
    depths: torch.Tensor
    means2d: torch.Tensor
    bounds: torch.Tensor
    radii: torch.Tensor


def cross2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def triangle_setup(v: torch.Tensor):
    """From 2D vertices (...,3,2): incentre s (...,2), edge coefficients g_k e_k (...,3,2) with
    g_k = P / (l_k A2), the inradius r (...) and twice the signed area A2 (...)."""
    e = torch.roll(v, -1, dims=-2) - v  # e_k = v_{k+1} - v_k
    lengths = e.norm(dim=-1)
    P = lengths.sum(-1)
    A2 = cross2(e[..., 0, :], e[..., 1, :])
    opposite = torch.roll(lengths, -1, dims=-1)  # side opposite v_k is e_{k+1}
    s = (opposite[..., None] * v).sum(-2) / P[..., None]
    g = P[..., None] / (lengths * A2[..., None])
    return s, g[..., None] * e, A2.abs() / P, A2


def window_q(pix: torch.Tensor, s: torch.Tensor, ge: torch.Tensor) -> torch.Tensor:
    """min_k q_k at pixels pix (...,2) for setups s (...,2), ge (...,3,2) broadcast against pix."""
    d = (pix - s)[..., None, :]
    return (1.0 + cross2(ge, d)).amin(-1)


def project_triangles(vertices, sigmas, opacities, viewmats, Ks, width, height, near=0.01, far=1e10
                      ) -> TriangleProjection:
    """Project N triangles into C cameras, cull and bound them.

    vertices (N,3,3), sigmas (N,), opacities (N,), viewmats (C,4,4), Ks (C,3,3). Gradients reach vertices
    and viewmats through verts2d and depths. Culled entries have radii 0 and zero outputs.
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p = torch.einsum("cij,nvj->cnvi", R, vertices) + t[:, None, None, :]  # (C,N,3,3)
    z = p[..., 2]
    finite = torch.isfinite(vertices).flatten(1).all(-1) & torch.isfinite(sigmas) & torch.isfinite(opacities)
    valid = finite[None] & torch.isfinite(p).flatten(2).all(-1) & (z >= near).all(-1) & (z <= far).all(-1)
    valid = valid & (sigmas >= 0)[None] & (opacities >= ALPHA_MIN)[None]
    with torch.no_grad():  # edge-on: the normal nearly perpendicular to the view ray through the centroid
        pd = torch.where(valid[..., None, None], p, torch.eye(3, dtype=p.dtype, device=p.device) + 1.0)
        nrm = torch.linalg.cross(pd[..., 1, :] - pd[..., 0, :], pd[..., 2, :] - pd[..., 0, :], dim=-1)
        cen = pd.mean(-2)
        cos = (nrm * cen).sum(-1) / (nrm.norm(dim=-1) * cen.norm(dim=-1))
        valid = valid & (cos.abs() >= COS_MIN)
    safe = torch.where(valid[..., None, None], p, torch.ones_like(p))
    fx, fy = Ks[:, 0, 0, None, None], Ks[:, 1, 1, None, None]
    cx, cy = Ks[:, 0, 2, None, None], Ks[:, 1, 2, None, None]
    x, y, zs = safe.unbind(-1)
    verts2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)  # (C,N,3,2)
    depths = zs.mean(-1)
    with torch.no_grad():
        cen = safe.mean(-2)
        means2d = torch.stack([fx[..., 0] * cen[..., 0] / cen[..., 2] + cx[..., 0],
                               fy[..., 0] * cen[..., 1] / cen[..., 2] + cy[..., 0]], -1)
        v = verts2d.detach()
        s, _, r, _ = triangle_setup(v)
        valid = valid & (r > 0) & torch.isfinite(r) & torch.isfinite(v).flatten(2).all(-1)
        # shrink factor (1 - t): t = (255 o)^(-1/sigma), 0 for sigma = 0
        o = opacities.detach()[None].clamp_min(ALPHA_MIN)
        sig = sigmas.detach()[None]
        tshr = torch.where(sig > 0, torch.exp(-torch.log(255.0 * o) / sig.clamp_min(1e-30)), torch.zeros_like(sig))
        tshr = (tshr * (1 - 1e-4)).expand_as(r)
        shrunk = s[..., None, :] + (1.0 - tshr)[..., None, None] * (v - s[..., None, :])
        lo, hi = shrunk.amin(-2), shrunk.amax(-2)
        margin = 0.01 + 1e-5 * (lo.abs() + hi.abs())
        lo, hi = lo - margin, hi + margin
        valid = valid & (hi[..., 0] > 0) & (lo[..., 0] < width) & (hi[..., 1] > 0) & (lo[..., 1] < height)
        bounds = torch.cat([lo, hi], -1) * valid[..., None]
        rad = torch.maximum(hi - means2d, means2d - lo)
        radii = torch.ceil(rad.clamp(0, 1 << 30)).to(torch.int32).clamp_min(1) * valid[..., None]
    keep = valid[..., None, None]
    return TriangleProjection(
        verts2d=verts2d * keep, depths=depths * valid, means2d=means2d * valid[..., None], bounds=bounds,
        radii=radii,
    )


def rasterize_triangles(verts2d, sigmas, colors, opacities, depths, bounds, radii, width, height, tile_size=16,
                        max_elements: int = 1 << 23):
    """Composite projected triangles into feats (C,H,W,4) [r,g,b,z], alphas (C,H,W,1), max weights (C,N).

    verts2d (C,N,3,2), sigmas (C,N), colors (C,N,3), opacities (C,N), depths (C,N), bounds (C,N,4)
    [xmin, ymin, xmax, ymax] pixels, radii (C,N,2) (0 = culled).
    """
    dev, dt = verts2d.device, verts2d.dtype
    vis = (radii > 0).all(-1)
    unit = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=dt, device=dev)
    s, ge, _, _ = triangle_setup(torch.where(vis[..., None, None], verts2d, unit))  # culled: finite dummies
    centre = 0.5 * (bounds[..., :2] + bounds[..., 2:])
    half = torch.ceil(0.5 * (bounds[..., 2:] - bounds[..., :2])).to(torch.int32) + 1
    half = half * vis[..., None]

    def alpha_fn(cam, gidx, pix, valid):
        pix = pix[:, :, None, :]  # (B,P,1,2)
        q = window_q(pix, s[cam][gidx][:, None], ge[cam][gidx][:, None])  # (B,P,L)
        in_image = (pix[..., 0] < width) & (pix[..., 1] < height)  # (B,P,1): edge tiles overhang the image
        inside = (q > 0) & valid[:, None] & in_image
        qs = torch.where(inside, q, torch.ones_like(q))
        # exp(sigma log q) rather than q ** sigma: a zero incoming gradient stays zero near the edges
        K = torch.where(inside, torch.exp(sigmas[cam][gidx][:, None] * torch.log(qs)), torch.zeros_like(q))
        return torch.clamp(opacities[cam][gidx][:, None] * K, max=ALPHA_MAX)

    return composite_tiles(centre, half, depths, colors, width, height, alpha_fn, tile_size, max_elements)
