"""Scene normalization: a similarity that centres the cameras and brings the scene to unit size.

x_norm = (x_user - centre) / scale. Cameras follow so that every projection is unchanged: a world->camera
``[R | t]`` becomes ``[R | (t + R centre) / scale]``, i.e. the camera frame is scaled with the world, so depths
are in normalized units (z_norm = z_user / scale) and K stays the same.

Scale rule (3DGS's ``cameras_extent`` with a guard):
    scale = max(1.1 * camera radius, GUARD_FRACTION * viewing distance)
The camera radius (max distance of a camera centre to their mean) measures the scene only when the cameras
surround it or at least move across it. Forward-facing captures with 3 views (LLFF) or a hand-held burst
have a baseline that can be a tiny fraction of the distance to the content, so the radius alone would make
the scene look huge in normalized units and the trainer's distance thresholds (split/prune sizes, position
learning rate, all proportional to ``scene_scale``) meaningless. The viewing distance is the median distance
of the points to the camera centre (robust to stray far points), else the geometric mean of near and far.
0.1 of it is the ratio full LLFF captures have (fern: ~4 units of camera spread at ~20-80 units of depth),
for which 3DGS's defaults are tuned; orbit captures (Blender: radius 4, objects within ~1.5) never reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras

CAMERA_RADIUS_FACTOR = 1.1  # 3DGS: cameras_extent = 1.1 * max distance of a camera centre to their mean
GUARD_FRACTION = 0.1  # scale >= this fraction of the viewing distance (see the module docstring)


@dataclass
class Normalization:
    """The similarity x_norm = (x_user - centre) / scale, as a 4x4 ``T`` (x_norm = T @ x_user).

    Attributes:
        T: (4, 4) float64 similarity, user -> normalized.
        centre: (3,) float64 mean of the camera centres (user frame).
        scale: user units per normalized unit.
        scene_scale: the scene extent in normalized units (the trainer's ``cameras_extent``, 1.0 by
            construction): learning rates and densification thresholds are multiplied by it.
        camera_radius: max distance of a camera centre to ``centre`` (user units).
        rule: which term chose ``scale``: "cameras", "points" or "near/far".
    """

    T: np.ndarray
    centre: np.ndarray
    scale: float
    scene_scale: float = 1.0
    camera_radius: float = 0.0
    rule: str = "cameras"

    @classmethod
    def from_centre_scale(cls, centre, scale: float, **kw) -> "Normalization":
        centre = np.asarray(centre, dtype=np.float64).reshape(3)
        T = np.eye(4)
        T[:3, :3] /= scale
        T[:3, 3] = -centre / scale
        return cls(T=T, centre=centre, scale=float(scale), **kw)

    def apply_points(self, p):
        """(..., 3) user-frame points -> normalized frame (same type and dtype as ``p``)."""
        return _map(p, lambda x: (x - self.centre) / self.scale)

    def invert_points(self, p):
        """(..., 3) normalized points -> user frame."""
        return _map(p, lambda x: x * self.scale + self.centre)

    def apply_cameras(self, cams: Cameras) -> Cameras:
        """Cameras whose projections of normalized points equal the user cameras' of user points."""
        V = cams.viewmats.detach().cpu().double().numpy()
        out = V.copy()
        R = V[:, :3, :3]
        out[:, :3, 3] = (V[:, :3, 3] + R @ self.centre) / self.scale
        return replace(cams, viewmats=torch.as_tensor(out).to(cams.viewmats))

    def invert_cameras(self, cams: Cameras) -> Cameras:
        """Normalized cameras -> user frame (inverse of ``apply_cameras``)."""
        V = cams.viewmats.detach().cpu().double().numpy()
        out = V.copy()
        R = V[:, :3, :3]
        out[:, :3, 3] = V[:, :3, 3] * self.scale - R @ self.centre
        return replace(cams, viewmats=torch.as_tensor(out).to(cams.viewmats))


def _map(p, fn):
    if isinstance(p, torch.Tensor):
        return torch.as_tensor(fn(p.detach().cpu().double().numpy())).to(p)
    a = np.asarray(p)
    out = fn(a.astype(np.float64))
    return out.astype(a.dtype) if np.issubdtype(a.dtype, np.floating) else out


def normalize_scene(
    cameras: Cameras,
    points: np.ndarray | None = None,
    near: float | None = None,
    far: float | None = None,
) -> Normalization:
    """Centre the cameras and scale the scene to unit extent (see the module docstring for the rule).

    Args:
        cameras: the (training) cameras, user frame.
        points: (M, 3) initial or SfM points in the user frame, or None.
        near, far: depth bounds (LLFF), used for the guard when there are no points.
    """
    centers = cameras.centers.detach().cpu().double().numpy()
    centre = centers.mean(axis=0)
    radius = float(np.linalg.norm(centers - centre, axis=1).max()) if len(centers) else 0.0
    scale, rule = CAMERA_RADIUS_FACTOR * radius, "cameras"
    distance = None
    if points is not None and len(points):
        p = np.asarray(points, dtype=np.float64)
        p = p[np.isfinite(p).all(axis=1)]
        if len(p):
            distance, source = float(np.median(np.linalg.norm(p - centre, axis=1))), "points"
    if distance is None and near is not None and far is not None and near > 0 and far > 0:
        distance, source = float(np.sqrt(near * far)), "near/far"
    if distance is not None and GUARD_FRACTION * distance > scale:
        scale, rule = GUARD_FRACTION * distance, source
    if not np.isfinite(scale) or scale <= 1e-12:
        # one camera, or all at one spot and nothing else to go by: keep user units
        scale, rule = 1.0, "identity"
    return Normalization.from_centre_scale(centre, scale, camera_radius=radius, rule=rule)
