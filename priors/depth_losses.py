"""Depth losses that trust a monocular depth prior only up to scale and shift.

A monocular network predicts *relative* depth: its values are an unknown affine (or monotone) function of
the true depth, and models differ in whether they predict depth or inverse depth (disparity). Every loss
here is therefore invariant to a positive scale and a shift of the prior:

- ``pearson_depth_loss`` (FSGS, Zhu et al. 2024): 1 - Pearson correlation between rendered and prior
  depth, taking the better of the depth and inverse-depth parameterizations of the render, so a prior in
  either convention works.
- ``ranking_depth_loss`` (SparseNeRF, Wang et al. 2023): for random pairs of nearby pixels, the rendered
  depth must keep the prior's order, by a margin.
- ``patch_normalized_depth_loss`` (DNGaussian, Li et al. 2024): L1 between rendered and prior depth after
  each is normalized (mean 0, std 1) within local patches, plus the same over the whole image.

Conventions: ``rendered`` is the rendered expected depth (H,W,1) or (H,W) in scene units, > 0 where
valid. ``prior`` is in *depth order* (larger = farther; ``DepthPrior`` converts disparity by negation),
(H,W,1) or (H,W). ``mask`` (same shape, optional) marks the pixels to use (e.g. alpha >= 0.5).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

_EPS = 1e-8


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1]) if x.ndim == 3 else x


def _valid(rendered: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    valid = rendered > 1e-6
    if mask is not None:
        valid = valid & (_flat(mask) > 0.5)
    return valid


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors (0 when either is constant)."""
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm()).clamp_min(_EPS)


def pearson_depth_loss(rendered: torch.Tensor, prior: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """FSGS: min(1 - r(depth, prior), 1 - r(-1/depth, prior)) over the valid pixels.

    -1/depth is increasing in depth, so a prior in depth order that is affine in disparity correlates with
    it perfectly, while one affine in depth correlates with ``depth``: the minimum picks the convention the
    prior was made in. Range [0, 2]; 0 for a perfect affine match.
    """
    d, p = _flat(rendered), _flat(prior).to(rendered)
    valid = _valid(d, mask)
    if int(valid.sum()) < 2:
        return d.sum() * 0
    d, p = d[valid], p[valid]
    return torch.minimum(1 - pearson(d, p), 1 - pearson(-1 / d, p))


def ranking_depth_loss(rendered: torch.Tensor, prior: torch.Tensor, mask: Optional[torch.Tensor] = None,
                       num_pairs: int = 4096, radius: int = 8, margin: float = 1e-4,
                       generator: Optional[torch.Generator] = None,
                       pairs: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """SparseNeRF local depth ranking: mean of relu(s * (d_a - d_b) + margin) over pixel pairs, s = sign(p_b - p_a).

    Where the prior says a is nearer than b (p_a < p_b, s = +1) the render is penalized unless
    d_a + margin <= d_b, and symmetrically. Pairs are a random pixel a and b = a + an offset of at most
    ``radius`` pixels (local: monocular depth orders nearby pixels reliably, far ones less so); pairs the
    prior cannot order (equal values) or that leave the mask are skipped. ``pairs`` gives explicit flat
    pixel indices (a, b) instead (tests). ``margin`` is in scene units of the rendered depth.
    """
    d, p = _flat(rendered), _flat(prior).to(rendered)
    H, W = d.shape
    if pairs is None:
        g = generator
        ia = torch.randint(0, H, (num_pairs,), generator=g)
        ja = torch.randint(0, W, (num_pairs,), generator=g)
        ib = (ia + torch.randint(-radius, radius + 1, (num_pairs,), generator=g)).clamp(0, H - 1)
        jb = (ja + torch.randint(-radius, radius + 1, (num_pairs,), generator=g)).clamp(0, W - 1)
        a, b = (ia * W + ja).to(d.device), (ib * W + jb).to(d.device)
    else:
        a, b = pairs[0].to(d.device), pairs[1].to(d.device)
    valid = _valid(d, mask).reshape(-1)
    d, p = d.reshape(-1), p.reshape(-1)
    order = torch.sign(p[b] - p[a])  # +1: a nearer than b per the prior
    keep = valid[a] & valid[b] & (order != 0)
    if not bool(keep.any()):
        return d.sum() * 0
    return F.relu(order[keep] * (d[a][keep] - d[b][keep]) + margin).mean()


def _normalize(x: torch.Tensor, valid: torch.Tensor, dims) -> torch.Tensor:
    """(x - mean) / std over ``dims`` counting only valid entries."""
    n = valid.sum(dims, keepdim=True).clamp_min(1)
    mean = (x * valid).sum(dims, keepdim=True) / n
    var = (((x - mean) * valid) ** 2).sum(dims, keepdim=True) / n
    return (x - mean) / (var + _EPS**2).sqrt()


def patch_normalized_depth_loss(rendered: torch.Tensor, prior: torch.Tensor, mask: Optional[torch.Tensor] = None,
                                patch: int = 16, global_weight: float = 0.1) -> torch.Tensor:
    """DNGaussian depth regularization: local (per ``patch`` x ``patch`` block) + ``global_weight`` x global
    L1 between the standardized rendered and prior depth.

    Standardizing each block removes the prior's scale and shift there, so the loss only asks the render to
    reproduce the prior's local shape; the global term ties the blocks' relative layout. Blocks are aligned
    to the top-left corner; the remainder rows/columns are dropped from the local term. Blocks with fewer
    than half their pixels valid are skipped.
    """
    d, p = _flat(rendered), _flat(prior).to(rendered)
    valid = _valid(d, mask).to(d.dtype)
    H, W = d.shape
    loss = d.sum() * 0
    hp, wp = H // patch, W // patch
    if hp and wp:
        def blocks(x):
            return x[: hp * patch, : wp * patch].reshape(hp, patch, wp, patch).permute(0, 2, 1, 3).reshape(hp * wp, -1)

        db, pb, vb = blocks(d), blocks(p), blocks(valid)
        use = (vb.mean(1) >= 0.5).to(d.dtype)
        diff = (_normalize(db, vb, 1) - _normalize(pb, vb, 1)).abs() * vb
        per_block = diff.sum(1) / vb.sum(1).clamp_min(1)
        loss = loss + (per_block * use).sum() / use.sum().clamp_min(1)
    if global_weight > 0 and valid.sum() >= 2:
        diff = (_normalize(d, valid, (0, 1)) - _normalize(p, valid, (0, 1))).abs() * valid
        loss = loss + global_weight * diff.sum() / valid.sum()
    return loss
