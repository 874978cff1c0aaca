"""The tile machinery every pure-PyTorch kind shares: binning primitives into 16x16 tiles, depth order,
and front-to-back compositing with the contract's thresholds (DESIGN.md §3).

A kind only says how opaque its primitive is at a pixel: ``composite_tiles`` calls
``alpha_fn(cam, gidx, pix, valid)`` for a chunk of tiles and does the rest (padding each tile's depth-sorted
list to the chunk's longest, compositing, the per-primitive max blending weight, assembling the image).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4

# alpha_fn(cam, gidx (B,L) primitive ids, pix (B,P,2) pixel centres, valid (B,L)) -> alpha (B,P,L)
AlphaFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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


def composite(alpha, feats):
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


def composite_tiles(centres, half_extents, depths, colors, width, height, alpha_fn: AlphaFn, tile_size=16,
                    max_elements: int = 1 << 24):
    """Composite C cameras' primitives into feats (C,H,W,4) [sum w rgb, sum w z], alphas (C,H,W,1) and the
    max blending weight per primitive (C,N), over pixels inside the image.

    centres (C,N,2) and half_extents (C,N,2) (0 = culled) bin the primitives into tiles; depths (C,N) order
    them; colors (C,N,3). Tiles go in chunks whose depth-sorted lists are padded to the chunk's longest, so
    each intermediate holds about ``max_elements`` samples. ``alpha_fn`` must return 0 for invalid slots.
    """
    C, N = centres.shape[:2]
    ts = tile_size
    tiles_x, tiles_y = math.ceil(width / ts), math.ceil(height / ts)
    dev, dt = centres.device, colors.dtype
    iy, ix = torch.meshgrid(torch.arange(ts, device=dev), torch.arange(ts, device=dev), indexing="ij")
    local_xy = torch.stack([ix.reshape(-1), iy.reshape(-1)], -1).to(dt) + 0.5  # (P,2) pixel centres
    feats_all, alphas_all, maxw_all = [], [], []
    for cam in range(C):
        tile_ids, prim_ids = intersect_tiles(centres[cam], half_extents[cam], depths[cam], width, height, ts)
        counts = torch.bincount(tile_ids, minlength=tiles_x * tiles_y)
        starts = torch.cumsum(counts, 0) - counts
        feat_tiles = torch.zeros(tiles_x * tiles_y, ts * ts, 4, dtype=dt, device=dev)
        alpha_tiles = torch.zeros(tiles_x * tiles_y, ts * ts, dtype=dt, device=dev)
        maxw = torch.zeros(N, dtype=dt, device=dev)
        cam_feats = torch.cat([colors[cam], depths[cam, :, None].to(dt)], dim=-1)  # (N,4)
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
            alpha = alpha_fn(cam, gidx, pix, valid)
            f, a, w = composite(alpha, cam_feats[gidx][:, None].expand(-1, ts * ts, -1, -1))
            feat_tiles = feat_tiles.index_put((tiles,), f)
            alpha_tiles = alpha_tiles.index_put((tiles,), a)
            with torch.no_grad():  # pixels of partial edge tiles beyond the image do not count
                inside = (pix[..., 0] < width) & (pix[..., 1] < height)  # (B,P)
                wmax = (w.detach() * inside[..., None]).amax(dim=1)  # (B,L)
                maxw.scatter_reduce_(0, gidx[valid], wmax[valid], reduce="amax")
            i = j
        feat_img = feat_tiles.reshape(tiles_y, tiles_x, ts, ts, 4).permute(0, 2, 1, 3, 4)
        feats_all.append(feat_img.reshape(tiles_y * ts, tiles_x * ts, 4)[:height, :width])
        alpha_img = alpha_tiles.reshape(tiles_y, tiles_x, ts, ts).permute(0, 2, 1, 3)
        alphas_all.append(alpha_img.reshape(tiles_y * ts, tiles_x * ts)[:height, :width, None])
        maxw_all.append(maxw)
    return torch.stack(feats_all), torch.stack(alphas_all), torch.stack(maxw_all)
