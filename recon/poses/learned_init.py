"""Learned initializers: dense points from models with weights, behind one interface (``--init mono-depth``).

A ``LearnedInitializer`` turns posed views and their sparse points into a dense coloured cloud:

    init = MonoDepthInitializer(TransformersDepthPrior("depth-anything/Depth-Anything-V2-Small-hf"))
    points, colors, stats = init(images, cameras, sparse_points)

``MonoDepthInitializer`` (monocular depth aligned to the sparse points): for each view, a depth model's
relative prediction is fitted to the depths of the sparse points the view sees (scale and shift, robustly, in
inverse depth for disparity models, in depth for metric ones), back-projected at a pixel stride, and cleaned:
pixels on depth discontinuities (flying points between a foreground edge and the background) are dropped,
and so is any point that another view sees in *free space*, i.e. clearly in front of the surface that view's
own aligned depth puts there (visibility-based fusion: a point behind another view's surface is merely
hidden there). The fused cloud is voxel-averaged to at most ``max_points``.

Point-map models (DUSt3R-style, which predict points and poses together) fit the same interface; none ships
in transformers, so only the monocular path has an implementation. Weights are loaded from a local folder or
a hub id (``--depth-model``); tests use a tiny random model saved to a temporary folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras

from .dense import voxel_downsample
from .projection import project

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
"""The monocular depth model both commands name by default (``--depth-model``): a transformers hub id."""


@runtime_checkable
class LearnedInitializer(Protocol):
    name: str

    def __call__(self, images: np.ndarray, cams: Cameras, sparse: np.ndarray,
                 masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
        """images (V,H,W,3) in [0,1], cameras, sparse (M,3) world points, optional masks (V,H,W,1) ->
        (points (N,3) float32, colors (N,3) float32, stats)."""
        ...


@dataclass
class MonoDepthConfig:
    stride: int = 2  # back-project every stride-th pixel in each direction
    min_sparse: int = 10  # sparse points a view must see to align its depth (fewer: the view is skipped)
    fit_iters: int = 5  # trimmed least-squares rounds
    trim: float = 2.5  # drop sparse points whose residual exceeds trim x the median residual
    edge_tol: float = 0.05  # relative depth jump to a neighbour that marks a discontinuity
    # relative depth by which a point may lie in front of another view's surface; aligned monocular depth is
    # still off by several percent, so a tighter check would drop good points with the bad ones
    free_space_tol: float = 0.10
    max_points: int = 100_000


def fit_scale_shift(pred: np.ndarray, target: np.ndarray, iters: int = 5,
                    trim: float = 2.5) -> tuple[float, float, np.ndarray]:
    """(a, b, inlier mask) minimizing sum (a pred + b - target)^2 over the samples left after trimming outliers
    (residual above ``trim`` x the median absolute residual), refitted ``iters`` times."""
    keep = np.isfinite(pred) & np.isfinite(target)
    a, b = 1.0, 0.0
    for _ in range(max(1, iters)):
        if keep.sum() < 2:
            break
        A = np.stack([pred[keep], np.ones(int(keep.sum()))], 1)
        (a, b), *_ = np.linalg.lstsq(A, target[keep], rcond=None)
        r = np.abs(a * pred + b - target)
        med = float(np.median(r[keep]))
        new = np.isfinite(r) & (r <= trim * max(med, 1e-12))
        if (new == keep).all():
            break
        keep = new
    return float(a), float(b), keep


def _sample(depth: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Nearest-pixel lookup of depth (H,W) at continuous pixel coordinates (pixel centres at +0.5)."""
    H, W = depth.shape
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    ok = (iu >= 0) & (iu < W) & (iv >= 0) & (iv < H)
    out = np.full(len(u), np.nan)
    out[ok] = depth[iv[ok], iu[ok]]
    return out


def discontinuities(depth: np.ndarray, tol: float) -> np.ndarray:
    """(H,W) bool: pixels whose depth differs from a 4-neighbour's by more than ``tol`` (relative)."""
    d = depth
    jump = np.zeros(d.shape, bool)
    with np.errstate(invalid="ignore"):
        dx = np.abs(d[:, 1:] - d[:, :-1]) > tol * np.minimum(d[:, 1:], d[:, :-1])
        dy = np.abs(d[1:] - d[:-1]) > tol * np.minimum(d[1:], d[:-1])
    jump[:, 1:] |= dx
    jump[:, :-1] |= dx
    jump[1:] |= dy
    jump[:-1] |= dy
    return jump


class MonoDepthInitializer:
    """Monocular depth (any ``priors.depth.DepthPrior``) aligned per view to the sparse points.

    ``space``: "disparity" when the prior's values are negated relative inverse depth (what
    ``TransformersDepthPrior`` returns for relative models), "depth" for metric depth; "auto" asks the prior
    (its ``output`` attribute), else assumes disparity."""

    def __init__(self, prior, cfg: MonoDepthConfig | None = None, space: str = "auto"):
        self.prior = prior
        self.cfg = cfg or MonoDepthConfig()
        if space == "auto":
            space = "depth" if getattr(prior, "output", "disparity") == "depth" else "disparity"
        if space not in ("depth", "disparity"):
            raise ValueError(f"space must be depth, disparity or auto, not {space!r}")
        self.space = space
        self.name = f"mono-depth ({getattr(prior, 'name', type(prior).__name__)})"

    def aligned_depths(self, images: np.ndarray, cams: Cameras, sparse: np.ndarray,
                       names=None) -> tuple[list[np.ndarray | None], list[dict]]:
        """Per view: the prior's depth in the scene's units (inf where invalid), or None when the view sees
        too few sparse points to align; and the fit's statistics."""
        cfg = self.cfg
        pred = self.prior(torch.from_numpy(np.ascontiguousarray(images, np.float32)), names)[..., 0].numpy()
        Vs = cams.viewmats.detach().cpu().double().numpy()
        Ks = cams.Ks.detach().cpu().double().numpy()
        out, fits = [], []
        for k in range(len(images)):
            u, v, z = project(Vs[k], Ks[k], sparse)
            p = _sample(pred[k].astype(np.float64), u, v)
            seen = (z > 1e-9) & np.isfinite(p)
            if seen.sum() < cfg.min_sparse:
                out.append(None)
                fits.append({"view": k, "sparse_seen": int(seen.sum()), "aligned": False})
                continue
            if self.space == "disparity":  # relative inverse depth (negated): fit 1/z = a (-p) + b
                a, b, n = fit_scale_shift(-p[seen], 1.0 / z[seen], cfg.fit_iters, cfg.trim)
                inv = a * (-pred[k].astype(np.float64)) + b
                with np.errstate(divide="ignore"):
                    depth = np.where(inv > 1e-9, 1.0 / np.maximum(inv, 1e-12), np.inf)
            else:
                a, b, n = fit_scale_shift(p[seen], z[seen], cfg.fit_iters, cfg.trim)
                depth = a * pred[k].astype(np.float64) + b
                depth = np.where(depth > 1e-9, depth, np.inf)
            if a <= 0:  # the prediction orders depth the wrong way round here: nothing to trust
                out.append(None)
                fits.append({"view": k, "sparse_seen": int(seen.sum()), "aligned": False, "scale": a})
                continue
            zs = _sample(depth, u[seen][n], v[seen][n])
            rel = np.abs(zs - z[seen][n]) / z[seen][n]
            out.append(depth)
            fits.append({"view": k, "sparse_seen": int(seen.sum()), "inliers": int(n.sum()), "aligned": True,
                         "median_rel_err": float(np.median(rel))})
        return out, fits

    def __call__(self, images: np.ndarray, cams: Cameras, sparse: np.ndarray, masks: np.ndarray | None = None,
                 names=None) -> tuple[np.ndarray, np.ndarray, dict]:
        cfg = self.cfg
        sparse = np.asarray(sparse, np.float64).reshape(-1, 3)
        depths, fits = self.aligned_depths(images, cams, sparse, names)
        Vs = cams.viewmats.detach().cpu().double().numpy()
        Ks = cams.Ks.detach().cpu().double().numpy()
        H, W = images.shape[1:3]
        Xs, Cs, src = [], [], []
        for k, depth in enumerate(depths):
            if depth is None:
                continue
            ok = np.isfinite(depth) & ~discontinuities(depth, cfg.edge_tol)
            if masks is not None:
                ok &= masks[k, ..., 0] > 0.5
            grid = np.zeros_like(ok)
            grid[cfg.stride // 2::cfg.stride, cfg.stride // 2::cfg.stride] = True
            vv, uu = np.nonzero(ok & grid)
            z = depth[vv, uu]
            K = Ks[k]
            x = (uu + 0.5 - K[0, 2]) / K[0, 0] * z
            y = (vv + 0.5 - K[1, 2]) / K[1, 1] * z
            Xc = np.stack([x, y, z], 1)
            Xs.append((Xc - Vs[k, :3, 3]) @ Vs[k, :3, :3])
            Cs.append(images[k, vv, uu])
            src.append(np.full(len(z), k))
        stats = {"views_aligned": sum(d is not None for d in depths), "views": len(depths), "fits": fits}
        if not Xs:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), {**stats, "raw": 0, "kept": 0}
        X, C, src = np.concatenate(Xs), np.concatenate(Cs), np.concatenate(src)
        keep = np.ones(len(X), bool)
        for k, depth in enumerate(depths):  # free-space check against every other aligned view
            if depth is None:
                continue
            other = src != k
            u, v, z = project(Vs[k], Ks[k], X[other])
            d = _sample(depth, u, v)
            if masks is not None:  # outside view k's silhouette is free space too (object scenes)
                m = _sample(masks[k, ..., 0].astype(np.float64), u, v)
                in_front = (z > 1e-9) & np.isfinite(m) & (m < 0.5)
            else:
                in_front = np.zeros(len(z), bool)
            in_front |= (z > 1e-9) & np.isfinite(d) & (z < d * (1 - cfg.free_space_tol))
            keep[np.nonzero(other)[0][in_front]] = False
        P, Cc, voxel = voxel_downsample(X[keep], C[keep], cfg.max_points)
        stats.update(raw=len(X), kept=int(keep.sum()), voxel=voxel)
        return P.astype(np.float32), np.clip(Cc, 0, 1).astype(np.float32), stats


def mono_depth_summary(stats: dict, n_points: int) -> str:
    """One line for the log: how many points ``mono_depth_points`` returned and from how many views."""
    return (f"{stats['sparse']} sparse + {n_points - stats['sparse']} monocular-depth points from "
            f"{stats['views_aligned']}/{stats['views']} aligned views")


def mono_depth_points(scene, train_ids: list[int], depth_model: str, device: str = "cpu",
                      cache_dir=None, cfg: MonoDepthConfig | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The ``mono-depth`` initializer on ``scene``'s views ``train_ids``: the sparse points (the scene's own
    SfM points when no views are held out, else SIFT tracks triangulated with the cameras) plus the aligned
    monocular points. Returns (points, colors, stats)."""
    from sparsesplat.priors.depth import TransformersDepthPrior

    from ..init_points import input_masks, sparse_points

    ids = list(train_ids)
    sparse, cols = sparse_points(scene, ids)
    prior = TransformersDepthPrior(depth_model, device=device, cache_dir=cache_dir)
    masks = input_masks(scene)
    init = MonoDepthInitializer(prior, cfg)
    pts, pcols, stats = init(scene.images[ids].numpy(), scene.cameras[ids], sparse,
                             None if masks is None else masks[ids].numpy(),
                             names=[scene.names[i] for i in ids])
    stats["sparse"] = len(sparse)
    if stats["views_aligned"] == 0:
        raise ValueError(
            f"--init mono-depth: no training view sees enough of the {len(sparse)} sparse points "
            f"(>= {init.cfg.min_sparse}) to align its monocular depth; use --init dense or auto")
    return (np.concatenate([sparse, pts]).astype(np.float32), np.concatenate([cols, pcols]).astype(np.float32),
            stats)
