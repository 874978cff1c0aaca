"""Pure-PyTorch convex stages (3D Convex Splatting): the readable oracle the compiled backends are held to.

Two stage functions, the same on every backend (math in ``convex.h``, DESIGN.md §3):

- ``project_convexes(points, delta, sigma, opacities, viewmats, Ks, width, height, near, far)
  -> ConvexProjection``: projected centroid, the 2D hull's edge lines (scaled by z delta, relative to the
  centroid), the sharpness z sigma, depth, opacity and conservative per-axis bounds;
- ``rasterize_convexes(means2d, lines, nedges, sharp, colors, opacities, depths, radii, width, height,
  tile_size) -> (feats (C,H,W,4), alphas (C,H,W,1), max_weight (C,N))``.

The hull is chosen without gradients (Andrew's monotone chain, vectorized over every (camera, convex),
the same decisions as the C++ code); the lines are then differentiable functions of the hull vertices.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ...backends.torch_tiles import composite_tiles

HULL_EPS = 1e-5  # as kHullEps in convex.h
ALPHA_MAX = 0.99


class ConvexProjection(NamedTuple):
    """Per (camera, convex) screen-space values; culled entries are zero with radii 0 and nedges 0.

    means2d (C,N,2) projected centroid; lines (C,N,P,3) edge lines [nx, ny, o] * z delta in coordinates
    relative to means2d (rows >= nedges are zero); nedges (C,N) int32 hull edges; sharp (C,N) z sigma;
    depths (C,N) view depth of the centroid; opacities (C,N); radii (C,N,2) int32 bounds around means2d.
    """

    means2d: torch.Tensor
    lines: torch.Tensor
    nedges: torch.Tensor
    sharp: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    radii: torch.Tensor


def _cross(q, o, a, b):
    """cross(q[o], q[a], q[b]) for index tensors (M,), in the C++ operation order."""
    ar = torch.arange(q.shape[0], device=q.device)
    qo, qa, qb = q[ar, o], q[ar, a], q[ar, b]
    return (qa[:, 0] - qo[:, 0]) * (qb[:, 1] - qo[:, 1]) - (qa[:, 1] - qo[:, 1]) * (qb[:, 0] - qo[:, 0])


def _chain(q, seq, tol):
    """One monotone-chain pass over the points in order ``seq`` (M,P); returns (stack (M,P), size (M,))."""
    M, P = seq.shape
    ar = torch.arange(M, device=q.device)
    stack = torch.zeros(M, P, dtype=torch.long, device=q.device)
    size = torch.zeros(M, dtype=torch.long, device=q.device)
    for t in range(P):
        v = seq[:, t]
        for _ in range(P):
            i0 = stack[ar, (size - 2).clamp(min=0)]
            i1 = stack[ar, (size - 1).clamp(min=0)]
            pop = (size >= 2) & (_cross(q, i0, i1, v) <= tol)
            if not bool(pop.any()):
                break
            size = size - pop.long()
        stack[ar, size.clamp(max=P - 1)] = v
        size = size + 1
    return stack, size


def convex_hull_2d(q: torch.Tensor):
    """Counter-clockwise hull vertex indices (M,P) and counts (M,) of M point sets q (M,P,2) (no grad).

    Andrew's monotone chain with turns within HULL_EPS * S^2 dropped (S = largest |coordinate|), starting
    at the lowest (x, y, index); a count < 3 means collinear or coincident points.
    """
    q = q.detach()
    M, P = q.shape[:2]
    S = q.abs().amax(dim=(1, 2))
    tol = HULL_EPS * (S * S)
    by_y = torch.sort(q[..., 1], dim=1, stable=True).indices
    by_x = torch.sort(torch.gather(q[..., 0], 1, by_y), dim=1, stable=True).indices
    order = torch.gather(by_y, 1, by_x)
    lower, nl = _chain(q, order, tol)
    upper, nu = _chain(q, order.flip(1), tol)
    k = torch.arange(P, device=q.device)[None].expand(M, P)
    from_lower = k < (nl - 1)[:, None]
    ku = (k - (nl - 1)[:, None]).clamp(0, P - 1)
    hull = torch.where(from_lower, lower, torch.gather(upper, 1, ku))
    n = (nl + nu - 2).clamp(0, P)
    return hull, n


def _region_extent(q, hull, raw, n, c):
    """Half-extents (M,2) of {d : raw_k . (d,1) <= c} grown to contain the hull, as convex_region_extent."""
    M, P = hull.shape
    k = torch.arange(P, device=q.device)
    edge = k[None] < n[:, None]  # (M,P)
    verts = torch.gather(q, 1, hull[..., None].expand(M, P, 2)).abs() * edge[..., None]
    ext = verts.amax(dim=1)
    i, j = torch.triu_indices(P, P, offset=1, device=q.device)
    ri, rj = raw[:, i], raw[:, j]  # (M,Q,3)
    det = ri[..., 0] * rj[..., 1] - ri[..., 1] * rj[..., 0]
    scale = (ri[..., 0].abs() + ri[..., 1].abs()) * (rj[..., 0].abs() + rj[..., 1].abs())
    use = edge[:, i] & edge[:, j] & (det.abs() > 1e-9 * scale)
    det = torch.where(use, det, torch.ones_like(det))
    ci, cj = c[:, None] - ri[..., 2], c[:, None] - rj[..., 2]
    x = (ci * rj[..., 1] - cj * ri[..., 1]) / det
    y = (ri[..., 0] * cj - rj[..., 0] * ci) / det
    viol = raw[:, None, :, 0] * x[..., None] + raw[:, None, :, 1] * y[..., None] + raw[:, None, :, 2] - c[:, None, None]
    nk = raw[..., 0].abs() + raw[..., 1].abs()
    slack = 1e-4 * (nk[:, None] * (x.abs() + y.abs())[..., None] + raw[:, None, :, 2].abs() + c[:, None, None]) + 1e-12
    feasible = use & ((viol <= slack) | ~edge[:, None, :]).all(-1) & torch.isfinite(x) & torch.isfinite(y)
    ex = torch.where(feasible, x.abs(), torch.zeros_like(x)).amax(dim=1)
    ey = torch.where(feasible, y.abs(), torch.zeros_like(y)).amax(dim=1)
    return torch.maximum(ext, torch.stack([ex, ey], -1))


def project_convexes(points, delta, sigma, opacities, viewmats, Ks, width, height,
                     near=0.01, far=1e10) -> ConvexProjection:
    """Project N convexes (points (N,P,3), delta (N,), sigma (N,), opacities (N,)) into C cameras."""
    C, (N, P) = viewmats.shape[0], points.shape[:2]
    finite = (torch.isfinite(points).all(-1).all(-1) & torch.isfinite(delta) & torch.isfinite(sigma)
              & torch.isfinite(opacities) & (delta > 0) & (sigma > 0) & (255.0 * opacities > 1.0))
    pts = torch.where(finite[:, None, None], points, torch.zeros_like(points))
    dl = torch.where(finite, delta, torch.ones_like(delta))
    sg = torch.where(finite, sigma, torch.ones_like(sigma))
    op = torch.where(finite, opacities, torch.ones_like(opacities))
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p = torch.einsum("cij,npj->cnpi", R, pts) + t[:, None, None, :]  # (C,N,P,3)
    pc = p.sum(dim=2) / P
    z = pc[..., 2]
    valid = finite[None] & (p[..., 2] >= near).all(-1) & (z >= near) & (z <= far)
    zi = torch.where(valid[..., None], p[..., 2], torch.ones_like(p[..., 2]))
    zc = torch.where(valid, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    uc, vc = pc[..., 0] / zc, pc[..., 1] / zc
    m = torch.stack([fx * uc + cx, fy * vc + cy], dim=-1)
    q = torch.stack([fx[..., None] * (p[..., 0] / zi - uc[..., None]),
                     fy[..., None] * (p[..., 1] / zi - vc[..., None])], dim=-1)  # (C,N,P,2)
    q = torch.where(valid[..., None, None], q, torch.zeros_like(q))
    qf = q.reshape(C * N, P, 2)
    hull, n = convex_hull_2d(qf)
    k = torch.arange(P, device=points.device)[None]
    nxt = torch.where(k + 1 < n[:, None], k + 1, torch.zeros_like(k))
    ia, ib = hull, torch.gather(hull, 1, nxt)
    a = torch.gather(qf, 1, ia[..., None].expand(-1, -1, 2))
    b = torch.gather(qf, 1, ib[..., None].expand(-1, -1, 2))
    raw = torch.stack([b[..., 1] - a[..., 1], a[..., 0] - b[..., 0], a[..., 1] * b[..., 0] - a[..., 0] * b[..., 1]], -1)
    edge = (k < n[:, None])[..., None]
    raw = torch.where(edge, raw, torch.zeros_like(raw))
    valid = valid & (n >= 3).reshape(C, N)
    A, s = zc * dl, zc * sg
    lines = A[..., None, None] * raw.reshape(C, N, P, 3)

    with torch.no_grad():
        o = op.detach()[None].expand(C, N)
        c = torch.clamp_min(torch.log(torch.clamp_min(255.0 * o - 1.0, 1e-30)) / (s * A).detach(), 0.0)
        ext = _region_extent(qf, hull, raw.detach(), n, c.reshape(-1)).reshape(C, N, 2)
        mag = m.detach().abs()
        r = torch.ceil(ext * 1.0001 + 0.01 + 1e-5 * mag)
        ok = torch.isfinite(r).all(-1) & torch.isfinite(m.detach()).all(-1) & torch.isfinite(lines.detach()).all(-1).all(-1)
        mx, my = m.detach().unbind(-1)
        onscreen = (mx + r[..., 0] > 0) & (mx - r[..., 0] < width) & (my + r[..., 1] > 0) & (my - r[..., 1] < height)
        valid = valid & ok & onscreen
        radii = (torch.where(valid[..., None], r, torch.zeros_like(r)).clamp(max=2**30)).to(torch.int32)
    vf = valid.to(points.dtype)
    return ConvexProjection(
        means2d=m * vf[..., None],
        lines=torch.where(valid[..., None, None], lines, torch.zeros_like(lines)),
        nedges=(n.reshape(C, N) * valid).to(torch.int32),
        sharp=s * vf,
        depths=zc * vf,
        opacities=op[None] * vf,
        radii=radii,
    )


def convex_alpha(d, lines, nedges, sharp, opacities):
    """alpha at offsets d (...,2) of convexes with lines (...,P,3), nedges (...), sharp (...), opacities (...)."""
    u = lines[..., 0] * d[..., 0, None] + lines[..., 1] * d[..., 1, None] + lines[..., 2]
    k = torch.arange(lines.shape[-2], device=lines.device)
    u = torch.where(k < nedges[..., None], u, torch.full_like(u, -1e30))
    phi = torch.logsumexp(u, dim=-1)
    K = torch.sigmoid(-sharp * phi)
    return torch.clamp(opacities * K, max=ALPHA_MAX)


def rasterize_convexes(means2d, lines, nedges, sharp, colors, opacities, depths, radii, width, height,
                       tile_size=16, max_elements: int = 1 << 22):
    """Composite projected convexes into feats (C,H,W,4) = [sum w rgb, sum w z], alphas (C,H,W,1), max weights
    (C,N). Tiles are processed in chunks padded to the chunk's longest list (about ``max_elements`` samples)."""

    def alpha_fn(cam, gidx, pix, valid):
        d = pix[:, :, None, :] - means2d[cam][gidx][:, None, :, :]  # (B,P,L,2)
        alpha = convex_alpha(d, lines[cam][gidx][:, None], nedges[cam][gidx][:, None], sharp[cam][gidx][:, None],
                             opacities[cam][gidx][:, None])
        return torch.where(valid[:, None], alpha, torch.zeros_like(alpha))

    return composite_tiles(means2d, radii, depths, colors, width, height, alpha_fn, tile_size, max_elements)
