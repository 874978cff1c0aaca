"""The convex primitive type (3D Convex Splatting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...primitive_base import Appearance


@dataclass
class Convexes(Appearance):
    """N smooth 3D convexes (3D Convex Splatting): points (N,P,3) with 3 <= P <= 8 (6 by default in the
    paper), smoothness delta (N,) > 0, sharpness sigma (N,) > 0, opacities (N,). The shape seen by a camera
    is the 2D convex hull of the projected points, softened by delta (edges) and sigma (falloff)."""

    points: torch.Tensor = None
    delta: torch.Tensor = None
    sigma: torch.Tensor = None

    def __init__(self, points, delta, sigma, opacities, sh=None, colors=None):
        self.points, self.delta, self.sigma = points, delta, sigma
        self.opacities, self.sh, self.colors = opacities, sh, colors
        if points.ndim != 3 or points.shape[2] != 3 or not 3 <= points.shape[1] <= 8:
            raise ValueError(f"Convexes: points must be (N, P, 3) with 3 <= P <= 8; got {tuple(points.shape)}")
        n = points.shape[0]
        if delta.shape != (n,) or sigma.shape != (n,):
            raise ValueError(
                f"Convexes: delta and sigma must be ({n},); got {tuple(delta.shape)}, {tuple(sigma.shape)}"
            )
        self._check_appearance(n, "Convexes")

    HARMLESS: ClassVar[dict] = {"delta": 1.0, "sigma": 1.0}

    def well_formed(self) -> torch.Tensor:
        return (self.delta > 0) & (self.sigma > 0)

    def __len__(self) -> int:
        return self.points.shape[0]

    @property
    def centers(self) -> torch.Tensor:
        return self.points.mean(dim=1)
