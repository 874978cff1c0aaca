"""The last path of the pose chain: two-view essential matrix, views chained by PnP, bundle adjustment.

Used when COLMAP's mappers build no model or register fewer views. Works on the verified matches COLMAP
already computed (``colmap_sfm.read_matches``), with the intrinsics fixed to the given K (EXIF or a guess):
1. the pair with the most inlier matches is the seed: essential matrix (OpenCV, RANSAC), relative pose,
   triangulated inliers;
2. repeatedly, the unregistered view seeing the most triangulated points is added by PnP (RANSAC), its
   matches to registered views extend the tracks or make new points (checked for reprojection error,
   cheirality and triangulation angle);
3. bundle adjustment (scipy least squares, Huber loss, the first camera fixed) after every added view.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix
from scipy.spatial.transform import Rotation

from .colmap_sfm import ColmapModel


@dataclass
class FallbackConfig:
    min_pair_inliers: int = 15
    min_pnp_points: int = 8
    max_reproj_px: float = 4.0
    min_angle_deg: float = 1.0
    ransac_px: float = 2.0


class _Map:
    """Registered poses, 3D points and the (view, keypoint) -> point table."""

    def __init__(self, kps, Ks):
        self.kps, self.Ks = kps, Ks
        self.poses: dict[int, np.ndarray] = {}  # view -> 3x4 [R|t]
        self.X: list[np.ndarray] = []
        self.obs: list[dict[int, int]] = []  # per point: view -> keypoint
        self.lookup: dict[tuple[int, int], int] = {}

    def add_point(self, X, views: dict[int, int]) -> None:
        pid = len(self.X)
        self.X.append(X)
        self.obs.append(dict(views))
        for v, k in views.items():
            self.lookup[(v, k)] = pid

    def link(self, pid: int, v: int, k: int) -> None:
        if v not in self.obs[pid] and (v, k) not in self.lookup:
            self.obs[pid][v] = k
            self.lookup[(v, k)] = pid


def _pair_matches(matches, i, j) -> np.ndarray:
    return matches[(i, j)] if (i, j) in matches else matches[(j, i)][:, ::-1] if (j, i) in matches else np.zeros((0, 2), int)


def _project(P, K, X):
    Xc = X @ P[:, :3].T + P[:, 3]
    uv = Xc[:, :2] / np.where(np.abs(Xc[:, 2:]) < 1e-12, 1e-12, Xc[:, 2:]) @ K[:2, :2].T + K[:2, 2]
    return uv, Xc[:, 2]


def _triangulate(m: _Map, i: int, j: int, pairs: np.ndarray, cfg: FallbackConfig) -> int:
    """New points from matches (ki, kj) between registered views i and j; returns how many were added."""
    if len(pairs) == 0:
        return 0
    Pi, Pj = m.poses[i], m.poses[j]
    xi, xj = m.kps[i][pairs[:, 0]], m.kps[j][pairs[:, 1]]
    ni = cv2.undistortPoints(xi[:, None], m.Ks[i], None)[:, 0]
    nj = cv2.undistortPoints(xj[:, None], m.Ks[j], None)[:, 0]
    Xh = cv2.triangulatePoints(Pi, Pj, ni.T, nj.T).T
    X = Xh[:, :3] / np.where(np.abs(Xh[:, 3:]) < 1e-12, 1e-12, Xh[:, 3:])
    ui, zi = _project(Pi, m.Ks[i], X)
    uj, zj = _project(Pj, m.Ks[j], X)
    ci, cj = -Pi[:, :3].T @ Pi[:, 3], -Pj[:, :3].T @ Pj[:, 3]
    ri, rj = X - ci, X - cj
    cos = (ri * rj).sum(1) / np.maximum(np.linalg.norm(ri, axis=1) * np.linalg.norm(rj, axis=1), 1e-12)
    ok = (zi > 0) & (zj > 0) & (np.linalg.norm(ui - xi, axis=1) < cfg.max_reproj_px)
    ok &= (np.linalg.norm(uj - xj, axis=1) < cfg.max_reproj_px) & (np.degrees(np.arccos(np.clip(cos, -1, 1))) > cfg.min_angle_deg)
    n = 0
    for (ki, kj), X_, good in zip(pairs, X, ok):
        if good and (i, ki) not in m.lookup and (j, kj) not in m.lookup:
            m.add_point(X_, {i: int(ki), j: int(kj)})
            n += 1
    return n


def _bundle_adjust(m: _Map, fixed: int, loss_px: float = 2.0, max_nfev: int = 30) -> None:
    """Refine all registered poses but ``fixed`` and all points (pixel reprojection error, Huber loss)."""
    views = sorted(m.poses)
    slot = {v: k for k, v in enumerate(views)}
    free = np.array([v != fixed for v in views])
    X = np.array(m.X)
    obs = [(slot[v], p, m.kps[v][k]) for p, o in enumerate(m.obs) for v, k in o.items() if v in m.poses]
    ov = np.array([o[0] for o in obs])
    op = np.array([o[1] for o in obs])
    uv = np.array([o[2] for o in obs])
    Kv = m.Ks[np.array(views)][ov]
    nf = int(free.sum())
    nc = 6 * nf
    base = np.stack([np.concatenate([Rotation.from_matrix(m.poses[v][:, :3]).as_rotvec(), m.poses[v][:, 3]])
                     for v in views])

    def unpack(x):
        cams = base.copy()
        cams[free] = x[:nc].reshape(-1, 6)
        return cams, x[nc:].reshape(-1, 3)

    def residuals(x):
        cams, Y = unpack(x)
        R = Rotation.from_rotvec(cams[:, :3]).as_matrix()
        Xc = np.einsum("oij,oj->oi", R[ov], Y[op]) + cams[ov, 3:]
        z = np.where(np.abs(Xc[:, 2]) < 1e-9, 1e-9, Xc[:, 2])
        pred = np.stack([Kv[:, 0, 0] * Xc[:, 0] / z + Kv[:, 0, 2], Kv[:, 1, 1] * Xc[:, 1] / z + Kv[:, 1, 2]], 1)
        return (pred - uv).ravel()

    x0 = np.concatenate([base[free].ravel(), X.ravel()])
    A = lil_matrix((2 * len(obs), len(x0)), dtype=np.uint8)
    rows = np.arange(len(obs))
    for d in range(3):
        A[2 * rows, nc + 3 * op + d] = 1
        A[2 * rows + 1, nc + 3 * op + d] = 1
    col = np.cumsum(free) - 1  # slot -> index among the free cameras
    for k in np.flatnonzero(free[ov]):
        c = 6 * col[ov[k]]
        A[2 * k : 2 * k + 2, c : c + 6] = 1
    res = least_squares(residuals, x0, jac_sparsity=A, loss="huber", f_scale=loss_px, x_scale="jac",
                        max_nfev=max_nfev, method="trf", ftol=1e-10, xtol=1e-10, gtol=1e-10)
    cams, Y = unpack(res.x)
    R = Rotation.from_rotvec(cams[:, :3]).as_matrix()
    for k, v in enumerate(views):
        m.poses[v] = np.hstack([R[k], cams[k, 3:, None]])
    m.X = list(Y)


def fallback_sfm(kps: list[np.ndarray], matches: dict, Ks: np.ndarray, cfg: FallbackConfig | None = None) -> ColmapModel | None:
    """Chain views from the best essential-matrix pair by PnP with bundle adjustment; None if no pair holds."""
    cfg = cfg or FallbackConfig()
    Ks = np.asarray(Ks, np.float64)
    order = sorted(matches, key=lambda p: -len(matches[p]))
    m = None
    for i, j in order:
        if len(matches[(i, j)]) < cfg.min_pair_inliers:
            break
        m = _seed(kps, matches, Ks, i, j, cfg)
        if m is not None:
            break
    if m is None:
        return None
    seed = min(m.poses)
    _bundle_adjust(m, seed)
    while True:
        best, best_corr = None, None
        for v in range(len(kps)):
            if v in m.poses:
                continue
            corr = {}
            for r in m.poses:
                for kv, kr in _pair_matches(matches, v, r):
                    pid = m.lookup.get((r, int(kr)))
                    if pid is not None:
                        corr[int(kv)] = pid
            if len(corr) >= cfg.min_pnp_points and (best is None or len(corr) > len(best_corr)):
                best, best_corr = v, corr
        if best is None or not _register(m, best, best_corr, cfg):
            break
        for r in list(m.poses):
            if r != best:
                pairs = _pair_matches(matches, best, r)
                for kv, kr in pairs:
                    pid = m.lookup.get((r, int(kr)))
                    if pid is not None:
                        m.link(pid, best, int(kv))
                _triangulate(m, best, r, pairs, cfg)
        _bundle_adjust(m, seed, max_nfev=10)
    _bundle_adjust(m, seed, max_nfev=100)
    views = sorted(m.poses)
    V = np.tile(np.eye(4), (len(views), 1, 1))
    for k, v in enumerate(views):
        V[k, :3] = m.poses[v]
    X = np.array(m.X)
    seen = [np.array([p for p, o in enumerate(m.obs) if v in o], np.int64) for v in views]
    return ColmapModel(view_ids=views, viewmats=V, Ks=Ks[views], points=X, colors=np.full_like(X, 0.5),
                       errors=np.zeros(len(X)), track_lengths=np.array([len(o) for o in m.obs]), method="opencv",
                       observations=seen)


def _seed(kps, matches, Ks, i, j, cfg) -> _Map | None:
    pairs = matches[(i, j)]
    ni = cv2.undistortPoints(kps[i][pairs[:, 0]][:, None], Ks[i], None)[:, 0]
    nj = cv2.undistortPoints(kps[j][pairs[:, 1]][:, None], Ks[j], None)[:, 0]
    f = 0.5 * (Ks[i][0, 0] + Ks[j][0, 0])
    E, mask = cv2.findEssentialMat(ni, nj, np.eye(3), cv2.RANSAC, 0.999, cfg.ransac_px / f)
    if E is None or E.shape != (3, 3):
        return None
    n, R, t, mask = cv2.recoverPose(E, ni, nj, np.eye(3), mask=mask)
    if n < cfg.min_pair_inliers:
        return None
    m = _Map(kps, Ks)
    m.poses[i] = np.hstack([np.eye(3), np.zeros((3, 1))])
    m.poses[j] = np.hstack([R, t.reshape(3, 1)])
    added = _triangulate(m, i, j, pairs[mask.ravel() > 0], cfg)
    return m if added >= cfg.min_pair_inliers else None


def _register(m: _Map, v: int, corr: dict[int, int], cfg: FallbackConfig) -> bool:
    kv = np.array(list(corr))
    X = np.array([m.X[corr[k]] for k in kv])
    ok, rvec, tvec, inl = cv2.solvePnPRansac(X, m.kps[v][kv], m.Ks[v], None, reprojectionError=cfg.ransac_px * 2,
                                              iterationsCount=1000, flags=cv2.SOLVEPNP_EPNP)
    if not ok or inl is None or len(inl) < cfg.min_pnp_points:
        return False
    inl = inl.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(X[inl], m.kps[v][kv[inl]], m.Ks[v], None, rvec, tvec)
    m.poses[v] = np.hstack([cv2.Rodrigues(rvec)[0], tvec.reshape(3, 1)])
    for k in kv[inl]:
        m.link(corr[int(k)], v, int(k))
    return True
