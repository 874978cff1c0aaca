"""The triangle primitive type (Triangle Splatting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...primitive_base import Appearance


@dataclass
class Triangles(Appearance):
    """N triangles (Triangle Splatting): vertices (N,3,3) world positions, sigma (N,) >= 0 window
    sharpness (0 = solid triangle, larger = peaked at the incentre), opacities (N,)."""

    vertices: torch.Tensor = None
    sigma: torch.Tensor = None

    def __init__(self, vertices, sigma, opacities, sh=None, colors=None):
        self.vertices, self.sigma = vertices, sigma
        self.opacities, self.sh, self.colors = opacities, sh, colors
        n = vertices.shape[0]
        if vertices.shape != (n, 3, 3) or sigma.shape != (n,):
            raise ValueError(
                f"Triangles: vertices (N,3,3) and sigma (N,) expected; got {tuple(vertices.shape)}, {tuple(sigma.shape)}"
            )
        self._check_appearance(n, "Triangles")

    HARMLESS: ClassVar[dict] = {"sigma": 1.0}

    def well_formed(self) -> torch.Tensor:
        return self.sigma >= 0

    def __len__(self) -> int:
        return self.vertices.shape[0]

    @property
    def centers(self) -> torch.Tensor:
        """Centroids (N,3): where colours are evaluated and depth is measured."""
        return self.vertices.mean(dim=1)

    @property
    def normals(self) -> torch.Tensor:
        """Unit normals (N,3), (v1 - v0) x (v2 - v0) normalized (zero for degenerate triangles)."""
        v = self.vertices
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-30)
