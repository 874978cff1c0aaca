"""Similarity (Sim(3)) alignment of estimated cameras to reference cameras, and pose errors.

Estimated poses live in an arbitrary frame (SfM fixes neither position, orientation nor scale), so before
comparing them with ground truth, or before evaluating renders at test cameras given in the reference frame,
the estimate is mapped by the similarity x_ref = s R x_est + t that best aligns the camera centres
with the rotation from the cameras' orientations (chordal mean) and scale and translation from the centres
(least squares); ``umeyama`` (centres only) is kept for point sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sim3:
    """x_ref = scale * R @ x + t."""

    scale: float
    R: np.ndarray
    t: np.ndarray

    def matrix(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.scale * self.R
        T[:3, 3] = self.t
        return T

    def apply_points(self, p: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(p, np.float64) @ self.R.T + self.t

    def apply_viewmats(self, V: np.ndarray) -> np.ndarray:
        """World->camera matrices of the source frame -> rigid ones of the reference frame (same images)."""
        V = np.asarray(V, np.float64)
        out = np.tile(np.eye(4), (len(V), 1, 1))
        R = V[:, :3, :3] @ self.R.T
        centres = self.apply_points(camera_centres(V))
        out[:, :3, :3] = R
        out[:, :3, 3] = -np.einsum("cij,cj->ci", R, centres)
        return out


def camera_centres(V: np.ndarray) -> np.ndarray:
    """(C, 3) centres of world->camera matrices (C, 4, 4): -R^T t."""
    V = np.asarray(V, np.float64)
    return -np.einsum("cji,cj->ci", V[:, :3, :3], V[:, :3, 3])


def _project_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def umeyama(src: np.ndarray, dst: np.ndarray) -> Sim3:
    """Least-squares similarity with dst ~ s R src + t (Umeyama 1991); src, dst (n, 3), n >= 3."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U) * np.linalg.det(Vt))])
    R = U @ D @ Vt
    var = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var) if var > 0 else 1.0
    return Sim3(s, R, mu_d - s * R @ mu_s)


def align_cameras(V_est: np.ndarray, V_ref: np.ndarray) -> Sim3:
    """The similarity taking the estimated cameras (C, 4, 4) onto the reference ones (same order).

    The rotation is the chordal mean of the per-camera orientation offsets (well determined even when the
    centres are nearly collinear, as in a forward-facing sweep, where Umeyama's rotation about that line is
    not); scale and translation then fit the centres in least squares."""
    V_est, V_ref = np.asarray(V_est, np.float64), np.asarray(V_ref, np.float64)
    c_est, c_ref = camera_centres(V_est), camera_centres(V_ref)
    # R_ref = R_est R^T per camera  =>  R = R_ref^T R_est
    R = _project_rotation(sum(Vr[:3, :3].T @ Ve[:3, :3] for Ve, Vr in zip(V_est, V_ref)))
    xs = (c_est - c_est.mean(0)) @ R.T
    xd = c_ref - c_ref.mean(0)
    s = float((xs * xd).sum() / max((xs**2).sum(), 1e-30)) if len(c_est) > 1 else 1.0
    return Sim3(s, R, c_ref.mean(0) - s * R @ c_est.mean(0))


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angles (degrees) of rotation matrices (..., 3, 3)."""
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


def extent(V_ref: np.ndarray) -> float:
    """The scene extent the centre errors are relative to: max distance of a reference camera centre to
    their mean (the camera radius of ``recon.normalize``)."""
    c = camera_centres(V_ref)
    return float(np.linalg.norm(c - c.mean(0), axis=1).max()) if len(c) > 1 else 1.0


def pose_errors(V_est: np.ndarray, V_ref: np.ndarray) -> dict:
    """Per-camera rotation error (deg) and centre error (% of ``extent``) after Sim(3) alignment, with
    their medians and maxima, and the alignment itself."""
    V_est, V_ref = np.asarray(V_est, np.float64), np.asarray(V_ref, np.float64)
    sim = align_cameras(V_est, V_ref)
    V_al = sim.apply_viewmats(V_est)
    rot = rotation_angle_deg(V_al[:, :3, :3] @ np.transpose(V_ref[:, :3, :3], (0, 2, 1)))
    cen = np.linalg.norm(camera_centres(V_al) - camera_centres(V_ref), axis=1) / max(extent(V_ref), 1e-12) * 100
    return {"rotation_deg": rot, "centre_pct": cen, "median_rotation_deg": float(np.median(rot)),
            "max_rotation_deg": float(rot.max()), "median_centre_pct": float(np.median(cen)),
            "max_centre_pct": float(cen.max()), "sim3": sim}


def robust_pose_errors(V_est: np.ndarray, V_ref: np.ndarray, max_rotation_deg: float = 5.0,
                       max_centre_pct: float = 5.0, rounds: int = 5) -> dict:
    """``pose_errors`` with the Sim(3) fitted to the views that agree with it: a view whose error after the
    fit exceeds the limits (or 3x the median) is left out of the next fit, for a few rounds. One view
    registered the wrong way round (e.g. a near-symmetric object) then no longer drags every other view's
    error up. Returns ``pose_errors``' keys for ALL views (under that fit), plus ``inliers`` (bool per view)
    and ``n_outliers``."""
    V_est, V_ref = np.asarray(V_est, np.float64), np.asarray(V_ref, np.float64)
    keep = np.ones(len(V_est), bool)
    for _ in range(rounds):
        sim = align_cameras(V_est[keep], V_ref[keep])
        V_al = sim.apply_viewmats(V_est)
        rot = rotation_angle_deg(V_al[:, :3, :3] @ np.transpose(V_ref[:, :3, :3], (0, 2, 1)))
        cen = np.linalg.norm(camera_centres(V_al) - camera_centres(V_ref), axis=1) / max(extent(V_ref), 1e-12) * 100
        new = (rot <= max(max_rotation_deg, 3 * np.median(rot[keep]))) & \
              (cen <= max(max_centre_pct, 3 * np.median(cen[keep])))
        if new.sum() < 3 or (new == keep).all():
            break
        keep = new
    out = {"rotation_deg": rot, "centre_pct": cen, "sim3": sim, "inliers": keep, "n_outliers": int((~keep).sum())}
    for name, v in (("rotation_deg", rot[keep]), ("centre_pct", cen[keep])):
        out[f"median_{name}"], out[f"max_{name}"] = float(np.median(v)), float(v.max())
    return out
