"""Camera batches in the OpenCV convention (x right, y down, z forward).

``viewmats`` are world->camera 4x4 matrices and ``Ks`` 3x3 intrinsics in pixels; pixel (row i, col j) has
its centre at (j + 0.5, i + 0.5) in K's frame (gsplat's convention). All cameras of a batch share one
image size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Cameras:
    """A batch of C pinhole cameras.

    Attributes:
        viewmats: (C, 4, 4) world->camera transforms.
        Ks: (C, 3, 3) intrinsics in pixels.
        width, height: image size in pixels, shared by the batch.
    """

    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.viewmats.ndim == 2:
            self.viewmats = self.viewmats[None]
        if self.Ks.ndim == 2:
            self.Ks = self.Ks[None]
        if self.viewmats.shape[-2:] != (4, 4) or self.Ks.shape[-2:] != (3, 3):
            raise ValueError(
                f"Cameras needs viewmats (C,4,4) and Ks (C,3,3); got {tuple(self.viewmats.shape)} "
                f"and {tuple(self.Ks.shape)}"
            )
        if self.viewmats.shape[0] != self.Ks.shape[0]:
            raise ValueError(
                f"Cameras: {self.viewmats.shape[0]} viewmats but {self.Ks.shape[0]} intrinsics"
            )
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Cameras: image size must be positive, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return replace(self, viewmats=self.viewmats[idx], Ks=self.Ks[idx])

    @property
    def device(self) -> torch.device:
        return self.viewmats.device

    def to(self, device=None, dtype=None) -> "Cameras":
        return replace(
            self,
            viewmats=self.viewmats.to(device=device, dtype=dtype),
            Ks=self.Ks.to(device=device, dtype=dtype),
        )

    @property
    def camtoworlds(self) -> torch.Tensor:
        """(C, 4, 4) camera->world transforms."""
        return torch.linalg.inv(self.viewmats)

    @property
    def centers(self) -> torch.Tensor:
        """(C, 3) camera centres in world coordinates (differentiable w.r.t. viewmats)."""
        R = self.viewmats[:, :3, :3]
        t = self.viewmats[:, :3, 3]
        return -(R.transpose(1, 2) @ t[..., None])[..., 0]

    def scaled(self, factor: float) -> "Cameras":
        """Cameras for images resized by ``factor`` (e.g. 0.5 for half size).

        With pixel centres at (j + 0.5, i + 0.5), resizing maps image coordinates u -> u * factor exactly,
        so fx, fy, cx and cy all scale by the same factor (no half-pixel shift).
        """
        W = int(round(self.width * factor))
        H = int(round(self.height * factor))
        sx, sy = W / self.width, H / self.height
        Ks = self.Ks.clone()
        Ks[:, 0, :] *= sx
        Ks[:, 1, :] *= sy
        return replace(self, Ks=Ks, width=W, height=H)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """World->camera 4x4 (OpenCV axes) for a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that appears up in the image (the camera's -y axis).
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.as_tensor(up, dtype=torch.float64)
    z = target - eye
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-9:  # looking along up: pick any perpendicular
        x = torch.linalg.cross(z, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3] = R
    M[:3, 3] = -R @ eye
    return M


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
