"""Viewer cameras: the browser's camera state as plain data, and its conversion to ``Cameras``.

viser reports a client's camera as a camera->world rotation ``wxyz`` (OpenCV axes: x right, y down, z forward,
the project's convention), the camera centre ``position``, a vertical field of view in radians and the canvas
size. ``ViewCamera`` holds exactly that, so the render callback and its tests need no browser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras


def quat_to_matrix(wxyz) -> np.ndarray:
    """3x3 rotation of a (w, x, y, z) quaternion (any non-zero norm)."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R) -> np.ndarray:
    """(w, x, y, z) with w >= 0 of a 3x3 rotation matrix (Shepperd's method: stable for every angle)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    diag = np.diag(R)
    k = int(np.argmax([tr, *diag]))
    if k == 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = k - 1
        j, m = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + R[i, i] - R[j, j] - R[m, m], 1e-300))
        q = [0.0] * 4
        q[0] = (R[m, j] - R[j, m]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + m] = (R[m, i] + R[i, m]) / s
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


@dataclass(frozen=True)
class ViewCamera:
    """A viewer camera: ``wxyz`` camera->world rotation (OpenCV axes), ``position`` the camera centre in world
    coordinates, ``fov_y`` the vertical field of view in radians, ``aspect`` = width / height."""

    wxyz: tuple
    position: tuple
    fov_y: float
    aspect: float

    @property
    def camtoworld(self) -> np.ndarray:
        M = np.eye(4)
        M[:3, :3] = quat_to_matrix(self.wxyz)
        M[:3, 3] = self.position
        return M

    @property
    def forward(self) -> np.ndarray:
        return quat_to_matrix(self.wxyz)[:, 2]

    @property
    def up(self) -> np.ndarray:
        """The world direction that appears up in the image (the camera's -y axis)."""
        return -quat_to_matrix(self.wxyz)[:, 1]

    def with_aspect(self, aspect: float) -> "ViewCamera":
        return ViewCamera(self.wxyz, self.position, self.fov_y, float(aspect))


def frame_size(aspect: float, long_side: int) -> tuple[int, int]:
    """(width, height) of a frame whose longer side is ``long_side`` pixels, at least 1 each."""
    long_side = max(1, int(long_side))
    if aspect >= 1:
        return long_side, max(1, int(round(long_side / aspect)))
    return max(1, int(round(long_side * aspect))), long_side


def view_to_cameras(view: ViewCamera, width: int, height: int, device=None) -> Cameras:
    """A one-camera ``Cameras`` batch seeing what the viewer camera sees, at ``width`` x ``height`` pixels.

    Square pixels with the vertical field of view kept: fy = fx = (H / 2) / tan(fov_y / 2), principal point at
    the image centre (W / 2, H / 2) in the pixel-centre-at-half convention.
    """
    f = 0.5 * height / math.tan(0.5 * view.fov_y)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float32)
    viewmat = torch.as_tensor(np.linalg.inv(view.camtoworld), dtype=torch.float32)
    return Cameras(viewmat[None], K[None], width, height).to(device=device)


def camera_to_view(cams: Cameras, i: int) -> ViewCamera:
    """The viewer camera at training camera ``i`` (its pose and vertical field of view)."""
    V = cams.viewmats[i].detach().to("cpu", torch.float64).numpy()
    K = cams.Ks[i].detach().to("cpu", torch.float64).numpy()
    c2w = np.linalg.inv(V)
    fov_y = 2.0 * math.atan(0.5 * cams.height / K[1, 1])
    return ViewCamera(tuple(matrix_to_quat(c2w[:3, :3])), tuple(c2w[:3, 3]), fov_y, cams.width / cams.height)
