"""Visual-hull initialization for object scenes whose input photos carry foreground masks (alpha).

Space carving (Laurentini 1994): a voxel belongs to the hull when every training view that sees it
projects it onto the foreground. The hull contains the object, hugs it where the silhouettes are informative,
and needs no matches, which is what wide-baseline object captures (Blender's 8 views 45° apart) lack. The
initial primitives are placed on the hull's surface (interior voxels would never be seen), coloured from
the views in which they are not occluded by the hull itself (a per-view depth buffer of the surface).

Two levels: a coarse carve in a generous box around the cameras' common target finds the object's extent,
then a fine carve inside that extent. Masks are dilated by a pixel or two so small calibration errors do
not carve away thin parts. Only masks that are part of the input (Blender's alpha) may be used: masks that a
protocol reserves for evaluation (DTU) would leak test information.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sparsesplat.rasterizer import Cameras


@dataclass
class HullConfig:
    coarse_resolution: int = 64
    """Voxels per side of the coarse carve."""
    fine_resolution: int = 160
    """Voxels per side of the fine carve (along the longest side of the object's box)."""
    box_fraction: float = 0.75
    """Half side of the coarse box as a fraction of the median camera distance to the common target."""
    mask_threshold: float = 0.5
    dilate_px: int = 2
    """Grow the masks by this many pixels before carving (tolerance to calibration error)."""
    min_view_fraction: float = 1.0
    """A voxel must project inside the images of at least this fraction of the views (1: the classic hull,
    the intersection of all the viewing cones; lower it when the object leaves the frame in some views)."""


def _project(points: np.ndarray, V: np.ndarray, K: np.ndarray):
    """Pixel coordinates (M,2) and depths (M,) of world points in one view (OpenCV, pixel-centre K)."""
    cam = points @ V[:3, :3].T + V[:3, 3]
    z = cam[:, 2]
    uv = cam @ K.T
    uv = uv[:, :2] / np.where(np.abs(uv[:, 2:3]) > 1e-12, uv[:, 2:3], 1e-12)
    return uv, z


def _carve(centers: np.ndarray, masks: list[np.ndarray], V: np.ndarray, K: np.ndarray, cfg: HullConfig) -> np.ndarray:
    """Boolean (M,) of the voxel centres inside every silhouette that sees them."""
    keep = np.ones(len(centers), dtype=bool)
    seen = np.zeros(len(centers), dtype=np.int32)
    for v, mask in enumerate(masks):
        H, W = mask.shape
        uv, z = _project(centers, V[v], K[v])
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        inside = (z > 1e-6) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        fg = np.zeros(len(centers), dtype=bool)
        fg[inside] = mask[row[inside], col[inside]]
        keep &= ~inside | fg
        seen += inside
    return keep & (seen >= max(2, int(np.ceil(cfg.min_view_fraction * len(masks) - 1e-9))))


def _grid(lo: np.ndarray, hi: np.ndarray, n_long: int):
    step = float((hi - lo).max()) / n_long
    dims = np.maximum(np.ceil((hi - lo) / step).astype(int), 1)
    axes = [lo[i] + (np.arange(dims[i]) + 0.5) * step for i in range(3)]
    centers = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return centers, dims, step


def _surface(occ: np.ndarray) -> np.ndarray:
    """Occupied voxels with at least one empty 6-neighbour (the grid's border counts as empty)."""
    pad = np.pad(occ, 1, constant_values=False)
    interior = occ.copy()
    for axis in range(3):
        for shift in (1, -1):
            interior &= np.roll(pad, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return occ & ~interior


def _colors(points: np.ndarray, images: np.ndarray, V: np.ndarray, K: np.ndarray, tol: float) -> np.ndarray:
    """Mean colour over the views where a point is the nearest surface point at its pixel (within ``tol``)."""
    acc = np.zeros((len(points), 3))
    cnt = np.zeros(len(points))
    for v in range(len(images)):
        H, W = images[v].shape[:2]
        uv, z = _project(points, V[v], K[v])
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        inside = (z > 1e-6) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        idx = np.flatnonzero(inside)
        pix = row[idx] * W + col[idx]
        zbuf = np.full(H * W, np.inf)
        np.minimum.at(zbuf, pix, z[idx])
        # a 3x3 minimum: neighbouring surface points shadow each other's pixel gaps
        zimg = cv2.erode(zbuf.reshape(H, W).astype(np.float32), np.ones((3, 3), np.uint8))
        vis = z[idx] <= zimg[row[idx], col[idx]] + tol
        good = idx[vis]
        acc[good] += images[v][row[good], col[good]]
        cnt[good] += 1
    out = np.full((len(points), 3), 0.5)
    ok = cnt > 0
    out[ok] = acc[ok] / cnt[ok, None]
    return out.astype(np.float32)


def visual_hull_points(images: np.ndarray, masks: np.ndarray, cams: Cameras, max_points: int = 100_000,
                       seed: int = 0, cfg: HullConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(points (M,3), colors (M,3)) float32 on the surface of the visual hull of ``masks`` (V,H,W[,1]).

    Raises ValueError when the silhouettes carve everything away (masks inconsistent with the cameras).
    """
    cfg = cfg or HullConfig()
    V = cams.viewmats.detach().cpu().double().numpy()
    K = cams.Ks.detach().cpu().double().numpy()
    kernel = np.ones((2 * cfg.dilate_px + 1,) * 2, np.uint8)
    fg = [cv2.dilate((np.asarray(m).reshape(m.shape[0], m.shape[1]) > cfg.mask_threshold).astype(np.uint8), kernel) > 0
          for m in masks]
    c2w = np.linalg.inv(V)
    centers_cam, axes = c2w[:, :3, 3], c2w[:, :3, 2]
    P = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    A, b = P.sum(axis=0), np.einsum("kij,kj->i", P, centers_cam)
    target = np.linalg.lstsq(A, b, rcond=None)[0] if np.linalg.matrix_rank(A) == 3 else centers_cam.mean(0)
    half = cfg.box_fraction * float(np.median(np.linalg.norm(centers_cam - target, axis=1)))

    coarse, dims, step = _grid(target - half, target + half, cfg.coarse_resolution)
    occ = _carve(coarse, fg, V, K, cfg)
    if not occ.any():
        raise ValueError("the foreground masks carve the whole scene away: they disagree with the cameras")
    kept = coarse[occ]
    lo, hi = kept.min(0) - 1.5 * step, kept.max(0) + 1.5 * step

    fine, dims, step = _grid(lo, hi, cfg.fine_resolution)
    occ = _carve(fine, fg, V, K, cfg).reshape(tuple(dims))
    if not occ.any():
        raise ValueError("the foreground masks carve the whole scene away: they disagree with the cameras")
    surf = np.flatnonzero(_surface(occ).reshape(-1))
    rng = np.random.default_rng(seed)
    if len(surf) > max_points:
        surf = rng.choice(surf, max_points, replace=False)
    pts = fine[surf] + (rng.random((len(surf), 3)) - 0.5) * step
    cols = _colors(pts, np.asarray(images, dtype=np.float64), V, K, tol=2.0 * step)
    return pts.astype(np.float32), cols
