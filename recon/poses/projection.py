"""Pinhole projection of world points into one view, shared by the pose-stage checks (dense consistency,
learned-depth fusion, SfM conflict checks). OpenCV axes; pixel centres at +0.5 (u = fx x/z + cx)."""

from __future__ import annotations

import numpy as np


def project(viewmat: np.ndarray, K: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, z) of points X (M, 3) in the view: pixel coordinates and camera depth. Points at or behind the
    camera (z <= 1e-9) get finite but meaningless pixels; test ``z`` or use ``in_image``."""
    Xc = X @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = Xc[:, 2]
    zs = np.where(z > 1e-9, z, 1.0)
    return K[0, 0] * Xc[:, 0] / zs + K[0, 2], K[1, 1] * Xc[:, 1] / zs + K[1, 2], z


def in_image(u: np.ndarray, v: np.ndarray, z: np.ndarray, width: int, height: int) -> np.ndarray:
    """Which projected points fall inside a width x height image, in front of the camera."""
    return (z > 1e-9) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
