"""What the viewer shows, as plain data handed over by its caller (``recon`` for run folders and training).

The viewer never reads run folders or trainer state itself: it receives a callable returning the current
activated primitives (anything ``render()`` draws), the training cameras with optional image thumbnails, and
the initial point cloud.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from sparsesplat.rasterizer import Cameras

from .camera import ViewCamera, camera_to_view, matrix_to_quat


@dataclass
class ViewerScene:
    """Inputs of the viewer.

    get_primitives: returns the activated primitives to draw (detached; called once at start and, during
        training, from the training thread each time the view refreshes).
    cameras: training (and test) cameras to draw as frusta, or None; names: one per camera.
    thumbnails: one small (h,w,3) uint8 image per camera shown in its frustum, or None.
    test_names: names of held-out views (their frusta are drawn in another colour).
    points, point_colors: (M,3) initial point cloud and (M,3) colours in [0,1], or None.
    background: (3,) RGB in [0,1] the scene was trained with.
    looks: training photo name -> its colour transform [A | b] (3x4) when the run learned per-photo appearance;
        the viewer offers each as a "Look".
    """

    get_primitives: Callable[[], object]
    cameras: Optional[Cameras] = None
    names: Sequence[str] = ()
    thumbnails: Optional[Sequence[np.ndarray]] = None
    test_names: Sequence[str] = ()
    points: Optional[np.ndarray] = None
    point_colors: Optional[np.ndarray] = None
    background: tuple = (0.0, 0.0, 0.0)
    title: str = "sparsesplat"
    total_steps: Optional[int] = None
    extra: dict = field(default_factory=dict)
    looks: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cameras is not None:
            if not self.names:
                self.names = [f"camera {i}" for i in range(len(self.cameras))]
            if len(self.names) != len(self.cameras):
                raise ValueError(f"ViewerScene: {len(self.names)} names for {len(self.cameras)} cameras")
            if self.thumbnails is not None and len(self.thumbnails) != len(self.cameras):
                raise ValueError(f"ViewerScene: {len(self.thumbnails)} thumbnails for {len(self.cameras)} cameras")
        self.background = tuple(float(c) for c in self.background)


def make_thumbnail(image, long_side: int = 128) -> np.ndarray:
    """(H,W,3) image (float in [0,1] or uint8, array or tensor) -> uint8 thumbnail with the given longer side."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(np.nan_to_num(a.astype(np.float64)) * 255), 0, 255).astype(np.uint8)
    a = a[..., :3]
    h, w = a.shape[:2]
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR))


@dataclass
class SceneFrame:
    """Where things are: ``up`` (unit world direction shown up), ``center`` and ``scale`` (a typical
    distance) of the scene, and the viewer camera a browser starts with."""

    up: np.ndarray
    center: np.ndarray
    scale: float
    start: ViewCamera


def scene_frame(cameras: Optional[Cameras], points: Optional[np.ndarray], prim_centers: Optional[np.ndarray]) -> SceneFrame:
    """Estimate up, centre and scale from the cameras (up = mean of the cameras' up directions, start at the
    first camera) or, without cameras, from the points (z up, looking at the centre from outside)."""
    pts = points if points is not None and len(points) else prim_centers
    if cameras is not None and len(cameras):
        c2w = torch.linalg.inv(cameras.viewmats.detach().to("cpu", torch.float64)).numpy()
        ups = -c2w[:, :3, 1]
        up = ups.mean(0)
        up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else ups[0]
        centers = c2w[:, :3, 3]
        start = camera_to_view(cameras, 0)
        if pts is not None and len(pts):
            center = np.median(pts, axis=0)
        else:
            center = centers.mean(0) + c2w[:, :3, 2].mean(0)
        scale = float(np.median(np.linalg.norm(centers - center, axis=1))) or 1.0
        return SceneFrame(up, center, scale, start)
    up = np.array([0.0, 0.0, 1.0])
    if pts is None or not len(pts):
        center, scale = np.zeros(3), 1.0
    else:
        center = np.median(pts, axis=0)
        scale = float(np.percentile(np.linalg.norm(pts - center, axis=1), 90)) or 1.0
    eye = center + scale * np.array([2.5, -2.5, 1.5])
    z = (center - eye) / np.linalg.norm(center - eye)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    start = ViewCamera(tuple(matrix_to_quat(np.stack([x, y, z], axis=1))), tuple(eye), np.deg2rad(50.0), 1.0)
    return SceneFrame(up, center, 3.0 * scale, start)


def primitive_centers(prims) -> Optional[np.ndarray]:
    """Centres of any primitive type that exposes ``centers`` (every type in the rasterizer does)."""
    c = getattr(prims, "centers", None)
    if isinstance(c, torch.Tensor):
        return c.detach().float().cpu().numpy()
    return None
