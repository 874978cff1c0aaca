"""Pure-PyTorch Gaussian backend: the readable oracle (autograd gradients, tile-bucketed, slow).

Implements the two stage functions every backend provides (see ``backends/__init__.py``):
``project_gaussians`` (EWA projection, opacity-aware per-axis bounds) and ``rasterize`` (16x16 tiles,
front-to-back compositing with the thresholds of DESIGN.md §3). The compiled backends are held to it.
"""

from __future__ import annotations

import math

import torch

from .types import Projection

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
EXTENT_MAX = 3.33


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(N,4) unit quaternions wxyz -> (N,3,3) rotation matrices."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                      eps2d=0.3, near=0.01, far=1e10, antialiased=False) -> Projection:
    """EWA projection of N Gaussians into C cameras.

    means (N,3), quats (N,4) wxyz (any norm), scales (N,3), opacities (N,), viewmats (C,4,4), Ks (C,3,3).
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
        extent = torch.clamp(torch.sqrt(2.0 * torch.log(torch.clamp_min(255.0 * o, 1.0))), max=EXTENT_MAX)
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


def tile_ranges(means2d, radii, width, height, tile_size=16):
    """Per primitive, the half-open tile ranges [x0,x1) x [y0,y1) its bounds touch, as (N,4) int64."""
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)
    m = means2d.detach()
    r = radii.to(m.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_size).clamp(0, tiles_x)
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile_size).clamp(0, tiles_x)
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_size).clamp(0, tiles_y)
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile_size).clamp(0, tiles_y)
    return torch.stack([x0, x1, y0, y1], dim=-1).long()


def intersect_tiles(means2d, radii, depths, width, height, tile_size=16):
    """(tile id, primitive id) pairs for one camera, sorted by tile then depth (front to back).

    Returns (tile_ids (M,), prim_ids (M,)) int64.
    """
    tiles_x = math.ceil(width / tile_size)
    vis = (radii > 0).all(-1).nonzero()[:, 0]
    if vis.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=means2d.device)
        return empty, empty
    rng = tile_ranges(means2d[vis], radii[vis], width, height, tile_size)
    nx, ny = rng[:, 1] - rng[:, 0], rng[:, 3] - rng[:, 2]
    counts = nx * ny
    owner = torch.repeat_interleave(torch.arange(len(vis), device=vis.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=vis.device) - start[owner]
    tx = rng[owner, 0] + local % nx[owner]
    ty = rng[owner, 2] + local // nx[owner]
    tile_ids = ty * tiles_x + tx
    prim_ids = vis[owner]
    # depth order first (stable, ties by index), then a stable sort by tile keeps it within each tile
    order = torch.sort(depths.detach()[prim_ids], stable=True).indices
    tile_ids, prim_ids = tile_ids[order], prim_ids[order]
    order = torch.sort(tile_ids, stable=True).indices
    return tile_ids[order], prim_ids[order]


def _composite(alpha, feats):
    """Front-to-back compositing along the last axis of ``alpha`` (..., L) with feats (..., L, F).

    Applies the contract's rules: samples with alpha < 1/255 are skipped, and a pixel stops before the
    sample whose transmittance would fall below 1e-4. Returns (sum w f (..., F), sum w (...), w (..., L)).
    """
    alpha = torch.where(alpha < ALPHA_MIN, torch.zeros_like(alpha), alpha)
    one_minus = 1.0 - alpha
    T_incl = torch.cumprod(one_minus, dim=-1)
    T_excl = torch.cat([torch.ones_like(T_incl[..., :1]), T_incl[..., :-1]], dim=-1)
    stop = (T_incl < T_MIN) & (alpha > 0)
    keep = torch.cumsum(stop.to(torch.int32), dim=-1) == 0
    w = alpha * T_excl * keep
    return (w[..., None] * feats).sum(-2), w.sum(-1), w


def rasterize(means2d, conics, colors, opacities, depths, radii, width, height, tile_size=16,
              max_elements: int = 1 << 24):
    """Composite projected Gaussians into (C,H,W,4) features [r,g,b,z], alphas (C,H,W,1), max weights (C,N).

    Tiles are processed in chunks, each tile's depth-sorted list padded to the chunk's longest list,
    so memory stays near ``max_elements`` floats per intermediate.
    """
    C, N = means2d.shape[:2]
    ts = tile_size
    tiles_x, tiles_y = math.ceil(width / ts), math.ceil(height / ts)
    dev, dt = means2d.device, means2d.dtype
    iy, ix = torch.meshgrid(torch.arange(ts, device=dev), torch.arange(ts, device=dev), indexing="ij")
    local_xy = torch.stack([ix.reshape(-1), iy.reshape(-1)], -1).to(dt) + 0.5  # (P,2) pixel centres
    feats_all, alphas_all, maxw_all = [], [], []
    for cam in range(C):
        tile_ids, prim_ids = intersect_tiles(means2d[cam], radii[cam], depths[cam], width, height, ts)
        counts = torch.bincount(tile_ids, minlength=tiles_x * tiles_y)
        starts = torch.cumsum(counts, 0) - counts
        feat_tiles = torch.zeros(tiles_x * tiles_y, ts * ts, 4, dtype=dt, device=dev)
        alpha_tiles = torch.zeros(tiles_x * tiles_y, ts * ts, dtype=dt, device=dev)
        maxw = torch.zeros(N, dtype=dt, device=dev)
        cam_feats = torch.cat([colors[cam], depths[cam, :, None]], dim=-1)  # (N,4)
        nonempty = (counts > 0).nonzero()[:, 0]
        nonempty = nonempty[torch.sort(counts[nonempty], stable=True).indices]  # similar lengths share a chunk
        i = 0
        while i < len(nonempty):
            # grow the chunk while the padded size fits the budget
            j, longest = i, 0
            while j < len(nonempty):
                longest_j = max(longest, int(counts[nonempty[j]]))
                if j > i and (j - i + 1) * ts * ts * longest_j > max_elements:
                    break
                longest, j = longest_j, j + 1
            tiles = nonempty[i:j]
            slot = torch.arange(longest, device=dev)
            valid = slot[None] < counts[tiles, None]  # (B,L)
            gidx = prim_ids[(starts[tiles, None] + slot[None]).clamp(max=max(len(prim_ids) - 1, 0))]
            gidx = torch.where(valid, gidx, torch.zeros_like(gidx))
            origin = torch.stack([tiles % tiles_x, tiles // tiles_x], -1).to(dt) * ts  # (B,2)
            pix = origin[:, None, :] + local_xy[None]  # (B,P,2)
            d = pix[:, :, None, :] - means2d[cam][gidx][:, None, :, :]  # (B,P,L,2)
            con = conics[cam][gidx][:, None]  # (B,1,L,3)
            s = 0.5 * (con[..., 0] * d[..., 0] ** 2 + con[..., 2] * d[..., 1] ** 2) + con[..., 1] * d[..., 0] * d[..., 1]
            alpha = torch.clamp(opacities[cam][gidx][:, None] * torch.exp(-s), max=ALPHA_MAX)
            alpha = torch.where((s >= 0) & valid[:, None], alpha, torch.zeros_like(alpha))
            f, a, w = _composite(alpha, cam_feats[gidx][:, None].expand(-1, ts * ts, -1, -1))
            feat_tiles = feat_tiles.index_put((tiles,), f)
            alpha_tiles = alpha_tiles.index_put((tiles,), a)
            with torch.no_grad():  # pixels of partial edge tiles beyond the image do not count
                inside = (pix[..., 0] < width) & (pix[..., 1] < height)  # (B,P)
                wmax = (w.detach() * inside[..., None]).amax(dim=1)  # (B,L)
                maxw.scatter_reduce_(0, gidx[valid], wmax[valid], reduce="amax")
            i = j
        feat_img = feat_tiles.reshape(tiles_y, tiles_x, ts, ts, 4).permute(0, 2, 1, 3, 4)
        feat_img = feat_img.reshape(tiles_y * ts, tiles_x * ts, 4)[:height, :width]
        alpha_img = alpha_tiles.reshape(tiles_y, tiles_x, ts, ts).permute(0, 2, 1, 3)
        alpha_img = alpha_img.reshape(tiles_y * ts, tiles_x * ts)[:height, :width]
        feats_all.append(feat_img)
        alphas_all.append(alpha_img[..., None])
        maxw_all.append(maxw)
    return torch.stack(feats_all), torch.stack(alphas_all), torch.stack(maxw_all)

from .torch_triangles import project_triangles, rasterize_triangles  # noqa: E402,F401  (triangle stages)

from .torch_convexes import project_convexes, rasterize_convexes  # noqa: E402,F401  (convex stages)
