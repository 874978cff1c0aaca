"""Scene types: ``SceneListing`` (what a loader found, before pixels are read) and ``SceneData`` (loaded).

Loaders only list views (file, camera, size); ``loading.materialize`` then reads the pixels of the views a
protocol needs, so ``load(lego, protocol="blender8")`` decodes 33 PNGs instead of 300.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras


@dataclass
class ViewRecord:
    """One view of a listing. ``K`` (3,3) is in pixels of the image on disk (``width`` x ``height``),
    pixel centres at (j + 0.5, i + 0.5); ``viewmat`` (4,4) is world->camera, OpenCV axes."""

    name: str
    path: Path
    K: np.ndarray
    viewmat: np.ndarray
    width: int
    height: int
    mask_path: Path | None = None
    # OpenCV distortion coefficients (k1, k2, p1, p2) in K's camera; None for a pinhole camera.
    distortion: np.ndarray | None = None


@dataclass
class SceneListing:
    """Everything a loader knows about a scene without decoding images.

    ``splits`` maps split names ("train", "test", "val") to view indices for formats that ship splits;
    ``original_size`` is the (W, H) a downscale factor refers to (LLFF's full-resolution photos).
    """

    views: list[ViewRecord]
    source_format: str
    path: Path
    near: float | None = None
    far: float | None = None
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    white_background: bool = False
    poses_known: bool = True
    focal_is_guess: bool = False
    splits: dict[str, list[int]] = field(default_factory=dict)
    original_size: tuple[int, int] | None = None


@dataclass
class SceneData:
    """A loaded scene, whatever its format.

    Attributes:
        images: (N, H, W, 3) float32 in [0, 1], alpha already composited on ``background``.
        masks: (N, H, W, 1) float32 in [0, 1] (alpha or object masks), or None.
        cameras: ``Cameras`` batch of N (float32), OpenCV axes, K for the returned image size.
        names: N image names (relative paths as the format lists them).
        near, far: scene depth bounds when the format gives them (LLFF), else None.
        background: (3,) float32 RGB the images were composited on.
        white_background: whether ``background`` is white (the Blender convention).
        train_ids, test_ids: indices into ``images``; without a protocol all views train, none test.
        points, point_colors: (M, 3) float32 SfM points and their RGB in [0, 1], or None.
        focal_is_guess: the focal length is a default, not read from the data (photos without EXIF).
        poses_known: False for plain photos (viewmats are identity placeholders).
        source_format: "blender", "llff", "colmap", "dtu" or "photos".
        source_ids: index of each view in the full, unfiltered listing of the scene.
        source_count: how many views the scene folder holds (``len(self)`` is fewer under a protocol), or None.
        loss_masks: ``masks`` mark pixels to leave out of training and evaluation (a photo folder's masks/:
            people, cars, sky), rather than objects (DTU) or alpha (Blender).
        protocol: the protocol that chose the views, or None.
        path: the folder the scene was loaded from.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    cameras: Cameras
    names: list[str]
    near: float | None
    far: float | None
    background: torch.Tensor
    white_background: bool
    train_ids: list[int]
    test_ids: list[int]
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    focal_is_guess: bool = False
    poses_known: bool = True
    source_format: str = ""
    source_ids: list[int] = field(default_factory=list)
    protocol: str | None = None
    path: Path | None = None
    source_count: int | None = None
    loss_masks: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return self.cameras.height

    @property
    def width(self) -> int:
        return self.cameras.width

    def subset(self, ids: list[int]) -> "SceneData":
        """The views ``ids`` (in that order) as a new SceneData; train/test ids are remapped."""
        ids = [int(i) for i in ids]
        pos = {v: k for k, v in enumerate(ids)}
        idx = torch.as_tensor(ids, dtype=torch.long)
        return replace(
            self,
            images=self.images[idx],
            masks=None if self.masks is None else self.masks[idx],
            cameras=self.cameras[idx],
            names=[self.names[i] for i in ids],
            train_ids=[pos[i] for i in self.train_ids if i in pos],
            test_ids=[pos[i] for i in self.test_ids if i in pos],
            source_ids=[self.source_ids[i] for i in ids] if self.source_ids else [],
        )

    def train(self) -> "SceneData":
        """The training views only."""
        return self.subset(self.train_ids)

    def test(self) -> "SceneData":
        """The test views only."""
        return self.subset(self.test_ids)

    def _count(self) -> str:
        """"12 images", or "8 of 12 images (protocol llff6's views)" when a protocol loaded a subset."""
        n, total = len(self), self.source_count
        if total is None or total == n:
            return f"{n} images"
        chosen = f"protocol {self.protocol}'s views" if self.protocol else "the chosen views"
        return f"{n} of {total} images ({chosen})"

    def _scene_ids(self, ids: list[int]) -> str:
        """Ids as numbered in the full scene (what protocols publish)."""
        return _ids([self.source_ids[i] for i in ids] if self.source_ids else ids)

    def summary(self) -> str:
        """A few human-readable lines: format, image count and size, focal, split."""
        n = len(self)
        fx = float(self.cameras.Ks[:, 0, 0].mean()) if n else float("nan")
        fov = 2 * np.degrees(np.arctan(self.width / (2 * fx))) if n else float("nan")
        guess = " (guessed: no EXIF focal)" if self.focal_is_guess else ""
        lines = [
            f"{self.source_format} scene {self.path or ''}".rstrip(),
            f"  {self._count()}, {self.width}x{self.height}, focal {fx:.1f} px (hfov {fov:.1f} deg){guess}",
            f"  protocol {self.protocol or 'none'}: train {self._scene_ids(self.train_ids)}, "
            f"test {self._scene_ids(self.test_ids)}",
        ]
        extras = []
        if self.near is not None:
            extras.append(f"near/far {self.near:.3g}/{self.far:.3g}")
        if self.points is not None:
            extras.append(f"{len(self.points)} SfM points")
        if self.masks is not None:
            extras.append("masks")
        if not self.poses_known:
            extras.append("poses unknown")
        bg = ", ".join(f"{float(c):.2g}" for c in self.background)
        extras.append(f"background ({bg})")
        lines.append("  " + ", ".join(extras))
        return "\n".join(lines)


def _ids(ids: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    more = f", ... ({len(ids)} in all)" if len(ids) > limit else ""
    return f"[{shown}{more}]"
