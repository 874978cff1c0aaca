"""Dense initial points from posed views by rectified pairwise stereo (OpenCV SGBM), no learned weights.

Sparse SfM or triangulated points alone are too few at 3 views (3DGS on LLFF-3: ~15.5 dB from random points,
~19 dB from a dense matched cloud). For each view, its nearest neighbours that look the same way are
rectified with it (``cv2.stereoRectify``; a mostly vertical baseline is handled by transposing), and SGBM
with its left-right check (``disp12MaxDiff``) gives a disparity map over the range the sparse points span in
that pair. Disparities become points in the world; each point must agree with the depth map of at least one
*other* view (cross-view consistency: its depth there within ``depth_tol`` of what that view's own stereo
found) and lie inside the mask when the scene has one. The fused cloud is voxel-averaged (positions and
colours) to at most ``max_points``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from sparsesplat.rasterizer import Cameras

from .projection import in_image, project


@dataclass
class DenseConfig:
    neighbours: int = 2  # stereo partners per view
    max_view_angle_deg: float = 60.0  # partners must look within this angle of the view
    block_size: int = 5
    uniqueness: int = 10
    lr_max_diff: int = 1  # SGBM left-right check, pixels
    max_disparities: int = 256
    depth_tol: float = 0.02  # relative depth agreement with another view
    min_consistent: int = 1  # other views that must agree
    max_points: int = 100_000
    min_sparse: int = 8  # sparse points needed in a pair to bound its disparity range


@dataclass
class DenseResult:
    points: np.ndarray
    colors: np.ndarray
    stats: dict = field(default_factory=dict)


def _np(cams: Cameras):
    return cams.viewmats.detach().cpu().double().numpy(), cams.Ks.detach().cpu().double().numpy()


def choose_pairs(V: np.ndarray, cfg: DenseConfig) -> list[tuple[int, int]]:
    """For each view, its nearest cameras (by centre) whose optical axes are within the angle limit."""
    centres = -np.einsum("cji,cj->ci", V[:, :3, :3], V[:, :3, 3])
    axes = V[:, 2, :3]
    pairs = set()
    for i in range(len(V)):
        ok = [j for j in range(len(V)) if j != i and
              np.degrees(np.arccos(np.clip(axes[i] @ axes[j], -1, 1))) < cfg.max_view_angle_deg]
        ok.sort(key=lambda j: np.linalg.norm(centres[j] - centres[i]))
        for j in ok[: cfg.neighbours]:
            if np.linalg.norm(centres[j] - centres[i]) > 1e-9:
                pairs.add((i, j))
    return sorted(pairs)


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def stereo_pair(img_i, img_j, Vi, Vj, Ki, Kj, sparse, cfg: DenseConfig, mask_i=None):
    """World points (n, 3) and colours seen by view i, from SGBM between views i and j; or None.

    ``sparse`` (M, 3) world points bound the disparity search."""
    H, W = img_i.shape[:2]
    R = Vj[:3, :3] @ Vi[:3, :3].T
    T = Vj[:3, 3] - R @ Vi[:3, 3]
    R1, R2, _, _, _, _, _ = cv2.stereoRectify(Ki, np.zeros(5), Kj, np.zeros(5), (W, H), R, T.reshape(3, 1),
                                              flags=cv2.CALIB_ZERO_DISPARITY)
    P1, P2, (Wr, Hr) = _rectified_projections(Ki, Kj, R1, R2, W, H, T)
    vertical = abs(P2[1, 3]) > abs(P2[0, 3])
    m1 = cv2.initUndistortRectifyMap(Ki, np.zeros(5), R1, P1, (Wr, Hr), cv2.CV_32FC1)
    m2 = cv2.initUndistortRectifyMap(Kj, np.zeros(5), R2, P2, (Wr, Hr), cv2.CV_32FC1)
    li = cv2.remap(img_i.astype(np.float32), *m1, cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    rj = cv2.remap(img_j.astype(np.float32), *m2, cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    valid_l = cv2.remap(np.ones((H, W), np.float32), *m1, cv2.INTER_NEAREST) > 0.5
    if mask_i is not None:
        valid_l &= cv2.remap(mask_i.astype(np.float32), *m1, cv2.INTER_NEAREST) > 0.5
    # disparity range from the sparse points projected into both rectified views
    Xi = sparse @ Vi[:3, :3].T + Vi[:3, 3]
    Xr = Xi @ R1.T
    Xr2 = (sparse @ Vj[:3, :3].T + Vj[:3, 3]) @ R2.T
    front = (Xr[:, 2] > 0) & (Xr2[:, 2] > 0)
    a = 1 if vertical else 0
    u1 = P1[a, a] * Xr[front, a] / Xr[front, 2] + P1[a, 2]
    u2 = P2[a, a] * Xr2[front, a] / Xr2[front, 2] + P2[a, 2]
    inside = (u1 >= 0) & (u1 < (Hr if vertical else Wr))
    d = (u1 - u2)[inside]
    if len(d) < cfg.min_sparse:
        return None
    # SGBM (and its left-right check) wants the right view's match to the left of the left view's pixel;
    # when view j sits on the other side, mirror both images along the disparity axis
    mirror = float(np.median(d)) < 0
    if mirror:
        d = -d
    lo, hi = np.percentile(d, 2), np.percentile(d, 98)
    margin = 0.15 * (hi - lo) + 4
    shift = int(np.floor(lo - margin))  # the right image is shifted by this, so SGBM searches [0, num)
    length = Hr if vertical else Wr
    num = int(np.ceil((hi + margin - shift) / 16.0)) * 16
    num = max(16, min(num, cfg.max_disparities, (length // 2) // 16 * 16))
    bs = cfg.block_size
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num, blockSize=bs, P1=8 * bs * bs,
                                 P2=32 * bs * bs, disp12MaxDiff=cfg.lr_max_diff, uniquenessRatio=cfg.uniqueness,
                                 speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    gl, gr = _gray(li), _gray(rj)
    if vertical:
        gl, gr = np.ascontiguousarray(gl.T), np.ascontiguousarray(gr.T)
    if mirror:
        gl, gr = np.ascontiguousarray(gl[:, ::-1]), np.ascontiguousarray(gr[:, ::-1])
    # r'(x) = r(x - shift): a match at disparity d appears at d - shift
    gr = cv2.warpAffine(gr, np.float32([[1, 0, shift], [0, 1, 0]]), (gr.shape[1], gr.shape[0]))
    raw = sgbm.compute(gl, gr).astype(np.float32) / 16.0
    ok = raw >= 0  # SGBM writes -1 where it found nothing
    disp = raw + shift
    if mirror:
        disp, ok = -disp[:, ::-1], ok[:, ::-1]
    if vertical:
        disp, ok = disp.T, ok.T
    ok = ok & valid_l
    f = P1[a, a]
    baseline = -P2[a, 3] / P2[a, a]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = f * baseline / disp
    ok &= np.isfinite(z) & (z > 0)
    vv, uu = np.nonzero(ok)
    z = z[vv, uu]
    x = (uu - P1[0, 2]) / P1[0, 0] * z
    y = (vv - P1[1, 2]) / P1[1, 1] * z
    Xrect = np.stack([x, y, z], 1)
    Xcam = Xrect @ R1  # R1 maps camera -> rectified; its transpose maps back
    Xw = (Xcam - Vi[:3, 3]) @ Vi[:3, :3]
    return Xw, li[vv, uu]


def _rectified_projections(Ki, Kj, R1, R2, W, H, T):
    """P1, P2 (3x4) and the rectified image size: both views' focal (the mean), one principal point placing
    view i's rectified image corners inside a frame of at most twice the original size (OpenCV's ``alpha``
    choices either zoom far in or waste pixels when the views are rotated relative to each other)."""
    f = 0.25 * (Ki[0, 0] + Ki[1, 1] + Kj[0, 0] + Kj[1, 1])
    corners = np.array([[0, 0, 1], [W, 0, 1], [0, H, 1], [W, H, 1]], np.float64)
    rays = corners @ np.linalg.inv(Ki).T @ R1.T
    xy = f * rays[:, :2] / np.maximum(rays[:, 2:], 1e-6)
    lo, hi = xy.min(0), xy.max(0)
    size = np.minimum(hi - lo, [2 * W, 2 * H])
    centre = 0.5 * (lo + hi)
    c = size / 2 - centre
    Kr = np.array([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1]])
    P1 = np.hstack([Kr, np.zeros((3, 1))])
    # the baseline in the rectified frame: camera j sits at -R2 T... both frames share orientation, so the
    # offset of j's origin in i's rectified frame is R1 @ (-R^T T) = -(R2 @ T) when R2 = R1 R^T
    t2 = R2 @ T.reshape(3)
    P2 = np.hstack([Kr, (Kr @ t2).reshape(3, 1)])
    return P1, P2, (int(np.ceil(size[0])), int(np.ceil(size[1])))


def _depth_map(V, K, W, H, X) -> np.ndarray:
    """Nearest depth per pixel of points X seen by camera (V, K); inf where none."""
    Xc = X @ V[:3, :3].T + V[:3, 3]
    z = Xc[:, 2]
    good = z > 1e-9
    u = np.floor(K[0, 0] * Xc[good, 0] / z[good] + K[0, 2]).astype(np.int64)
    v = np.floor(K[1, 1] * Xc[good, 1] / z[good] + K[1, 2]).astype(np.int64)
    zz = z[good]
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    D = np.full(H * W, np.inf)
    np.minimum.at(D, v[inside] * W + u[inside], zz[inside])
    return D.reshape(H, W)


def _consistent(V, K, W, H, X, D, tol) -> np.ndarray:
    """Whether each point's depth in this view agrees with the view's depth map D (False if unseen)."""
    u, v, z = project(V, K, X)
    inside = in_image(u, v, z, W, H)
    u, v = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    d = np.full(len(X), np.inf)
    d[inside] = D[v[inside], u[inside]]
    return inside & (np.abs(d - z) <= tol * z)


def voxel_downsample(points: np.ndarray, colors: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Average points and colours per voxel, with the voxel the smallest power-of-two fraction of the cloud's
    (2-98 percentile) extent that leaves at most ``max_points``. Returns (points, colors, voxel size)."""
    if len(points) <= max_points:
        return points, colors, 0.0
    lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
    size = float((hi - lo).max()) / 2048
    while True:
        keys = np.floor(points / size).astype(np.int64)
        _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        if len(counts) <= max_points:
            break
        size *= 1.5
    inv = inv.ravel()
    P = np.zeros((len(counts), 3))
    C = np.zeros((len(counts), 3))
    np.add.at(P, inv, points)
    np.add.at(C, inv, colors)
    return P / counts[:, None], C / counts[:, None], size


def dense_points(images: np.ndarray, cams: Cameras, sparse: np.ndarray, masks: np.ndarray | None = None,
                 cfg: DenseConfig | None = None) -> DenseResult:
    """Dense coloured points (user frame) from ``images`` (V, H, W, 3) seen by ``cams`` (known or estimated
    poses); ``sparse`` (M, 3) points bound each pair's disparity search."""
    cfg = cfg or DenseConfig()
    V, K = _np(cams)
    W, H = cams.width, cams.height
    # rectification maps put pixel centres at integers; move K's principal point from +0.5 to OpenCV's frame
    Kcv = K.copy()
    Kcv[:, 0, 2] -= 0.5
    Kcv[:, 1, 2] -= 0.5
    sparse = np.asarray(sparse, np.float64).reshape(-1, 3)
    per_view: dict[int, list] = {i: [] for i in range(len(V))}
    pairs = choose_pairs(V, cfg)
    for i, j in pairs:
        res = stereo_pair(images[i], images[j], V[i], V[j], Kcv[i], Kcv[j], sparse, cfg,
                          None if masks is None else masks[i, ..., 0])
        if res is not None:
            per_view[i].append(res)
    Xs, Cs, src = [], [], []
    for i, lst in per_view.items():
        for X, C in lst:
            Xs.append(X), Cs.append(C), src.append(np.full(len(X), i))
    if not Xs:
        return DenseResult(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), {"pairs": len(pairs), "raw": 0})
    X, C, src = np.concatenate(Xs), np.concatenate(Cs), np.concatenate(src)
    depth = {i: _depth_map(V[i], K[i], W, H, X[src == i]) for i in per_view if (src == i).any()}
    votes = np.zeros(len(X), np.int64)
    for k, D in depth.items():
        sel = src != k
        votes[sel] += _consistent(V[k], K[k], W, H, X[sel], D, cfg.depth_tol)
    keep = votes >= cfg.min_consistent
    raw, consistent = len(X), int(keep.sum())
    P, Cc, voxel = voxel_downsample(X[keep], C[keep], cfg.max_points)
    return DenseResult(P.astype(np.float32), np.clip(Cc, 0, 1).astype(np.float32),
                       {"pairs": len(pairs), "raw": raw, "consistent": consistent, "voxel": voxel})
