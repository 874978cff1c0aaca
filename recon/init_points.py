"""Initial points from images with KNOWN cameras: SIFT matches triangulated into multi-view tracks.

Pipeline (``triangulate_tracks``): RootSIFT features per view -> brute-force matching of every view pair
(ratio test + mutual nearest neighbour) -> epipolar filter from the known cameras (Sampson distance) ->
tracks = connected components of the match graph over (view, keypoint) -> DLT over all views of a track,
then Gauss-Newton on the pixel reprojection error -> drop the worst observation while it exceeds the
threshold -> keep points in front of every camera, with a small reprojection error and a wide enough
triangulation angle. Colours are the mean of bilinear samples over the track. Deterministic.

Also ``random_points``, the last-resort initializer. Keypoints are moved to the project's pixel convention
(pixel (i, j) has its centre at (j + 0.5, i + 0.5)); OpenCV puts it at (j, i).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sparsesplat.datasets import SceneData
from sparsesplat.rasterizer import Cameras

from .normalize import normalize_scene


@dataclass
class TriangulationConfig:
    max_features: int = 8000  # SIFT features per view
    # OpenCV's default 0.04 finds ~1k features on a 504x378 photo; sparse views need every match they get
    contrast_threshold: float = 0.005
    ratio: float = 0.8  # Lowe's ratio test
    max_epipolar_px: float = 2.0  # Sampson distance (first-order geometric error), pixels
    max_reproj_px: float = 2.0  # in every view of a kept track
    min_angle_deg: float = 1.0  # widest angle between two rays of a track
    max_pairs_per_view: int = 10
    guided: bool = True  # search matches only near the epipolar lines of the known cameras
    # a two-view point needs its match to be the image-wide nearest neighbour by this ratio
    two_view_ratio: float = 0.9
    # two-view points must keep their colour in at least half of the other views that frame them
    check_two_view_colour: bool = True
    max_colour_diff: float = 0.15  # above 12 views, match each view with its nearest views only
    gauss_newton_iters: int = 4


@dataclass
class Triangulation:
    """Triangulated points (user frame) with per-point quality and what each stage produced.

    Attributes:
        points: (M, 3) float32; colors: (M, 3) float32 in [0, 1].
        errors: (M,) mean reprojection error over the track, pixels; track_lengths: (M,) views per point.
        n_features: features per view; n_matches: matches per stage (mutual+ratio, after epipolar);
        n_tracks: tracks before the 3D checks; seconds: wall time per stage.
    """

    points: np.ndarray
    colors: np.ndarray
    errors: np.ndarray
    track_lengths: np.ndarray
    n_features: list[int] = field(default_factory=list)
    n_matches: tuple[int, int] = (0, 0)
    n_tracks: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- features and matching


def detect_features(image: np.ndarray, max_features: int, contrast_threshold: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """RootSIFT on a (H, W, 3) float image in [0, 1]: keypoints (n, 2) float64 in K's pixel frame and
    unit-norm descriptors (n, 128) float32 (Hellinger kernel, so dot products compare them)."""
    gray = cv2.cvtColor((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=contrast_threshold)
    kps, desc = sift.detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    xy = np.array([k.pt for k in kps], dtype=np.float64) + 0.5
    desc = desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    return xy, np.sqrt(desc).astype(np.float32)


def match_descriptors(
    d1: np.ndarray, d2: np.ndarray, ratio: float, band=None, strong_ratio: float = 0.9, chunk: int = 2048
) -> np.ndarray:
    """(k, 3) rows (i1, i2, strong): nearest neighbours 1->2 that pass the ratio test and are mutual.

    ``band`` = (F, x1 (n1,2), x2 (n2,2), max_px) restricts candidates to pairs within ``max_px`` Sampson
    distance of the epipolar geometry F (guided matching): with known cameras, the ratio test then only
    weighs the candidates that could be the same 3D point, so repetitive texture elsewhere in the image
    no longer vetoes a match (more matches on LLFF fern). ``strong`` (0/1) says whether the match also
    is also the nearest neighbour in the whole image, by ``strong_ratio``: only such a match can stand alone as a
    two-view point, since a two-view point's depth along the epipolar line is never checked again."""
    if len(d1) < 2 or len(d2) < 2:
        return np.zeros((0, 3), dtype=np.int64)
    a, b = torch.from_numpy(d1), torch.from_numpy(d2)
    if band is not None:
        F, x1, x2, max_px = band
        h1 = torch.from_numpy(np.concatenate([x1, np.ones((len(x1), 1))], 1))
        h2 = torch.from_numpy(np.concatenate([x2, np.ones((len(x2), 1))], 1))
        Fx1, Ftx2 = h1 @ torch.from_numpy(F).T, h2 @ torch.from_numpy(F)
        den1, den2 = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2, Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    best1, second1, nn12, glob_ok = [], [], [], []
    col_best = torch.full((len(d2),), -3.0)
    col_arg = torch.zeros(len(d2), dtype=torch.long)
    for s in range(0, len(d1), chunk):
        sim = a[s : s + chunk] @ b.T
        g = sim.topk(2, dim=1)
        g_ok = (g.indices[:, 0], torch.sqrt(torch.clamp(2 - 2 * g.values[:, 0], min=0))
                < strong_ratio * torch.sqrt(torch.clamp(2 - 2 * g.values[:, 1], min=0)))
        if band is not None:
            num = (Fx1[s : s + chunk] @ h2.T) ** 2
            sampson2 = num / torch.clamp(den1[s : s + chunk, None] + den2[None], min=1e-30)
            sim = torch.where(sampson2 < max_px**2, sim, torch.tensor(-2.0, dtype=sim.dtype))
        top = sim.topk(2, dim=1)
        best1.append(top.values[:, 0]), second1.append(top.values[:, 1]), nn12.append(top.indices[:, 0])
        glob_ok.append(g_ok[1] & (g_ok[0] == top.indices[:, 0]))
        cmax, carg = sim.max(dim=0)
        better = cmax > col_best
        col_best = torch.where(better, cmax, col_best)
        col_arg = torch.where(better, carg + s, col_arg)
    best, second = torch.cat(best1), torch.cat(second1)
    # unit descriptors: squared distance = 2 - 2 * similarity; -2 marks "no candidate"
    d_best = torch.sqrt(torch.clamp(2 - 2 * best, min=0))
    d_second = torch.where(second > -2, torch.sqrt(torch.clamp(2 - 2 * second, min=0)), torch.tensor(np.inf))
    nn = torch.cat(nn12)
    i = torch.arange(len(d1))
    keep = (best > -2) & (d_best < ratio * d_second) & (col_arg[nn] == i)
    strong = torch.cat(glob_ok).long()
    return torch.stack([i[keep], nn[keep], strong[keep]], dim=1).numpy()


def fundamental(cams: Cameras, i: int, j: int) -> np.ndarray:
    """F with x_j^T F x_i = 0 for pixels of views i and j of ``cams``."""
    V = cams.viewmats.detach().cpu().double().numpy()
    K = cams.Ks.detach().cpu().double().numpy()
    R = V[j, :3, :3] @ V[i, :3, :3].T
    t = V[j, :3, 3] - R @ V[i, :3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(K[j]).T @ tx @ R @ np.linalg.inv(K[i])


def sampson_distance(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """First-order geometric distance (pixels) of correspondences x1 (n,2) <-> x2 (n,2) to F."""
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], axis=1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], axis=1)
    Fx1, Ftx2 = h1 @ F.T, h2 @ F
    num = np.einsum("ij,ij->i", h2, Fx1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-30))


def view_pairs(cams: Cameras, max_per_view: int) -> list[tuple[int, int]]:
    """All pairs for up to 12 views; beyond, each view with its ``max_per_view`` nearest views (by centre
    distance in camera radii plus the angle between optical axes)."""
    n = len(cams)
    if n <= 12:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    c = cams.centers.detach().cpu().double().numpy()
    axes = cams.viewmats.detach().cpu().double().numpy()[:, 2, :3]
    radius = max(np.linalg.norm(c - c.mean(0), axis=1).max(), 1e-12)
    d = np.linalg.norm(c[:, None] - c[None], axis=2) / radius + np.arccos(np.clip(axes @ axes.T, -1, 1))
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1, kind="stable")[:, :max_per_view]
    return sorted({(min(i, j), max(i, j)) for i in range(n) for j in near[i]})


# ----------------------------------------------------------------------------- tracks


def build_tracks(n_kp: list[int], matches: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """(T, V) keypoint index per track and view (-1: not seen) from pairwise matches.

    Tracks are connected components over (view, keypoint) nodes (union-find). A view that contributes
    two keypoints to one track is ambiguous and is left out of that track."""
    offsets = np.concatenate([[0], np.cumsum(n_kp)]).astype(np.int64)
    edges = [np.stack([m[:, 0] + offsets[i], m[:, 1] + offsets[j]], 1) for (i, j), m in matches.items() if len(m)]
    if not edges:
        return np.zeros((0, len(n_kp)), dtype=np.int64)
    e = np.concatenate(edges)
    n = int(offsets[-1])
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    nodes = np.unique(e)
    comp = label[nodes]
    view = np.searchsorted(offsets, nodes, side="right") - 1
    _, track, counts = np.unique(comp, return_inverse=True, return_counts=True)
    cell = track * len(n_kp) + view
    cell_ids, cell_counts = np.unique(cell, return_counts=True)
    single = np.isin(cell, cell_ids[cell_counts == 1])
    table = np.full((len(counts), len(n_kp)), -1, dtype=np.int64)
    table[track[single], view[single]] = nodes[single] - offsets[view[single]]
    return table[(table >= 0).sum(axis=1) >= 2]


# ----------------------------------------------------------------------------- 3D


def _is_strong_pair(table: np.ndarray, valid: np.ndarray, matches: dict) -> np.ndarray:
    """(T,) whether a track's two remaining views are joined by a strong (unguided-ratio) match."""
    out = np.zeros(len(table), dtype=bool)
    two = np.flatnonzero(valid.sum(axis=1) == 2)
    if not len(two):
        return out
    views = np.sort(np.argsort(~valid[two], axis=1, kind="stable")[:, :2], axis=1)
    kp = np.take_along_axis(table[two], views, axis=1)
    for (i, j), m in matches.items():
        sel = (views[:, 0] == i) & (views[:, 1] == j)
        if not sel.any() or not len(m):
            continue
        strong = m[m[:, 2] == 1]
        key = strong[:, 0] * (int(m[:, 1].max()) + 1) + strong[:, 1]
        out[two[sel]] = np.isin(kp[sel, 0] * (int(m[:, 1].max()) + 1) + kp[sel, 1], key)
    return out


def _dlt(P: np.ndarray, xn: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear triangulation of all tracks at once: P (V,3,4) [R|t], xn (T,V,2) normalized image
    coordinates. Returns homogeneous points (T, 4) (smallest eigenvector of A^T A)."""
    rows = np.stack([xn[..., :1] * P[None, :, 2] - P[None, :, 0], xn[..., 1:] * P[None, :, 2] - P[None, :, 1]], 2)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
    rows = rows * valid[..., None, None]
    A = np.einsum("tvki,tvkj->tij", rows, rows)
    return np.linalg.eigh(A)[1][:, :, 0]


def _project(V: np.ndarray, K: np.ndarray, X: np.ndarray):
    """Pixels (T,V,2) and camera-frame points (T,V,3) of X (T,3) in all views."""
    Xc = np.einsum("vij,tj->tvi", V[:, :3, :3], X) + V[None, :, :3, 3]
    z = Xc[..., 2:]
    zs = np.where(np.abs(z) < 1e-12, 1e-12, z)
    uv = np.einsum("vij,tvj->tvi", K[:, :2, :2], Xc[..., :2] / zs) + K[None, :, :2, 2]
    return uv, Xc


def _gauss_newton(V, K, X, uv, valid, iters: int) -> np.ndarray:
    """Refine X (T,3) to minimize the pixel reprojection error over each track's valid views."""
    R = V[:, :3, :3]
    for _ in range(iters):
        pred, Xc = _project(V, K, X)
        z = Xc[..., 2]
        ok = valid & (z > 1e-9)
        zs = np.where(ok, z, 1.0)
        fx, fy = K[None, :, 0, 0], K[None, :, 1, 1]
        dproj = np.zeros(Xc.shape[:2] + (2, 3))
        dproj[..., 0, 0] = fx / zs
        dproj[..., 0, 2] = -fx * Xc[..., 0] / zs**2
        dproj[..., 1, 1] = fy / zs
        dproj[..., 1, 2] = -fy * Xc[..., 1] / zs**2
        J = np.einsum("tvij,vjk->tvik", dproj, R) * ok[..., None, None]
        r = (pred - uv) * ok[..., None]
        H = np.einsum("tvki,tvkj->tij", J, J)
        g = np.einsum("tvki,tvk->ti", J, r)
        damp = 1e-6 * np.trace(H, axis1=1, axis2=2)[:, None, None] * np.eye(3) + 1e-12 * np.eye(3)
        X = X - np.linalg.solve(H + damp, g[..., None])[..., 0]
    return X


def _errors(V, K, X, uv, valid) -> np.ndarray:
    """(T, V) reprojection error in pixels; inf behind a camera, nan where the view is not in the track."""
    pred, Xc = _project(V, K, X)
    err = np.linalg.norm(pred - uv, axis=-1)
    err = np.where(Xc[..., 2] > 1e-9, err, np.inf)
    return np.where(valid, err, np.nan)


def _max_ray_angle(centers: np.ndarray, X: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) widest angle (degrees) between the rays from a track's cameras to its point."""
    rays = X[:, None] - centers[None]
    rays /= np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-30)
    min_cos = np.ones(len(X))
    for v in range(centers.shape[0]):
        cos = np.einsum("tk,tvk->tv", rays[:, v], rays)
        cos = np.where(valid & valid[:, v : v + 1], cos, 1.0)
        min_cos = np.minimum(min_cos, cos.min(axis=1))
    return np.degrees(np.arccos(np.clip(min_cos, -1, 1)))


def bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(n, 3) colours of ``image`` (H, W, 3) at pixel positions uv (n, 2) in K's frame (centres at +0.5)."""
    H, W = image.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, W - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, H - 1)
    x0, y0 = np.minimum(np.floor(x).astype(int), W - 2), np.minimum(np.floor(y).astype(int), H - 2)
    x0, y0 = np.maximum(x0, 0), np.maximum(y0, 0)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def triangulate_tracks(
    images: np.ndarray, cams: Cameras, cfg: TriangulationConfig | None = None, max_points: int = 100_000
) -> Triangulation:
    """Triangulate SIFT tracks across ``images`` (V, H, W, 3) float in [0, 1] seen by known ``cams``.

    Points come back in the cameras' (user) frame, best first (longest tracks, then lowest error), at
    most ``max_points`` of them."""
    cfg = cfg or TriangulationConfig()
    secs, t0 = {}, time.perf_counter()
    feats = [detect_features(im, cfg.max_features, cfg.contrast_threshold) for im in images]
    secs["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    matches, n_raw, n_epi = {}, 0, 0
    for i, j in view_pairs(cams, cfg.max_pairs_per_view):
        F = fundamental(cams, i, j)
        band = (F, feats[i][0], feats[j][0], cfg.max_epipolar_px) if cfg.guided else None
        m = match_descriptors(feats[i][1], feats[j][1], cfg.ratio, band, cfg.two_view_ratio)
        n_raw += len(m)
        if len(m):
            d = sampson_distance(F, feats[i][0][m[:, 0]], feats[j][0][m[:, 1]])
            m = m[d < cfg.max_epipolar_px]
        n_epi += len(m)
        matches[(i, j)] = m
    secs["matching"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = build_tracks([len(f[0]) for f in feats], matches)
    n_tracks = len(table)
    valid = table >= 0
    uv = np.zeros(table.shape + (2,))
    for v, (xy, _) in enumerate(feats):
        uv[valid[:, v], v] = xy[table[valid[:, v], v]]

    # work in the normalized frame so the DLT is well conditioned; projections are the same there
    norm = normalize_scene(cams)
    ncams = norm.apply_cameras(cams)
    V = ncams.viewmats.detach().cpu().double().numpy()
    K = ncams.Ks.detach().cpu().double().numpy()
    Kinv = np.linalg.inv(K)
    xn = np.einsum("vij,tvj->tvi", Kinv[:, :2, :2], uv) + Kinv[None, :, :2, 2]
    X = np.zeros((len(table), 3))
    redo = np.ones(len(table), dtype=bool)
    for _ in range(len(cams)):
        if redo.any():
            Xh = _dlt(V[:, :3], xn[redo], valid[redo])
            w = np.where(np.abs(Xh[:, 3:]) < 1e-12, 1e-12, Xh[:, 3:])
            X[redo] = _gauss_newton(V, K, Xh[:, :3] / w, uv[redo], valid[redo], cfg.gauss_newton_iters)
        err = _errors(V, K, X, uv, valid)
        worst = np.nanargmax(np.nan_to_num(err, nan=-1.0, posinf=1e30), axis=1) if len(err) else np.zeros(0, int)
        worst_err = err[np.arange(len(err)), worst]
        redo = (worst_err > cfg.max_reproj_px) & (valid.sum(axis=1) > 2)
        if not redo.any():
            break
        valid[np.flatnonzero(redo), worst[redo]] = False  # drop the worst view, triangulate again
    err = _errors(V, K, X, uv, valid)
    n_obs = valid.sum(axis=1)
    centers = ncams.centers.detach().cpu().double().numpy()
    keep = (n_obs >= 2) & np.all(np.where(valid, err < cfg.max_reproj_px, True), axis=1)
    keep &= np.isfinite(X).all(axis=1)
    keep &= _max_ray_angle(centers, X, valid) > cfg.min_angle_deg
    keep &= (n_obs > 2) | _is_strong_pair(table, valid, matches)
    idx = np.flatnonzero(keep)
    mean_err = np.nanmean(np.where(valid[idx], err[idx], np.nan), axis=1) if len(idx) else np.zeros(0)
    order = np.lexsort((mean_err, -n_obs[idx]))[:max_points]
    idx, mean_err = idx[order], mean_err[order]

    colors = np.zeros((len(idx), 3))
    for v in range(len(cams)):
        sel = valid[idx, v]
        colors[sel] += bilinear(images[v], uv[idx[sel], v])
    colors /= np.maximum(n_obs[idx], 1)[:, None]
    secs["triangulation"] = time.perf_counter() - t0
    return Triangulation(
        points=norm.invert_points(X[idx]).astype(np.float32),
        colors=np.clip(colors, 0, 1).astype(np.float32),
        errors=mean_err.astype(np.float32),
        track_lengths=n_obs[idx],
        n_features=[len(f[0]) for f in feats],
        n_matches=(n_raw, n_epi),
        n_tracks=n_tracks,
        seconds=secs,
    )


def random_points(n: int, bounds_min, bounds_max, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 3), colors (n, 3)) float32: uniform in the box [bounds_min, bounds_max], random RGB."""
    rng = np.random.default_rng(seed)
    lo = np.broadcast_to(np.asarray(bounds_min, dtype=np.float64), (3,))
    hi = np.broadcast_to(np.asarray(bounds_max, dtype=np.float64), (3,))
    pts = lo + rng.random((n, 3)) * (hi - lo)
    return pts.astype(np.float32), rng.random((n, 3)).astype(np.float32)


def triangulate_matches(
    scene: SceneData, view_ids: list[int], max_points: int = 100_000, config: TriangulationConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(points (M, 3) float32, colors (M, 3) float32 in [0, 1]) triangulated from SIFT tracks across the
    views ``view_ids`` of ``scene`` with its known cameras (see ``init_points.triangulate_tracks``)."""
    tri = triangulate_tracks(scene.images[view_ids].numpy(), scene.cameras[list(view_ids)], config, max_points)
    return tri.points, tri.colors


def sparse_points(scene: SceneData, view_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The sparse points dense and learned initializers build on: the scene's own SfM points when no views
    are held out (else they would leak the test views), otherwise SIFT tracks triangulated across
    ``view_ids`` with the known cameras. (points (M, 3), colors (M, 3)) float32."""
    if scene.points is not None and len(scene.points) and not scene.test_ids:
        pts = np.asarray(scene.points, np.float32)
        cols = (np.asarray(scene.point_colors, np.float32) if scene.point_colors is not None
                else np.full_like(pts, 0.5))
        return pts, cols
    return triangulate_matches(scene, list(view_ids))


def input_masks(scene: SceneData):
    """Foreground masks that are part of the input photos (Blender's alpha), else None.

    DTU's object masks are not: the sparse-view protocol reserves them for the masked evaluation metrics."""
    return scene.masks if scene.masks is not None and scene.source_format == "blender" else None
