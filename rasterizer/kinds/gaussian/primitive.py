"""The Gaussian primitive types: 3D Gaussians and GES's generalized Gaussians (a learned falloff shape each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...primitive_base import Appearance


@dataclass
class Gaussians(Appearance):
    """N 3D Gaussians: means (N,3), quats (N,4) wxyz (any norm), scales (N,3) > 0, opacities (N,)."""

    means: torch.Tensor = None
    quats: torch.Tensor = None
    scales: torch.Tensor = None

    def __init__(self, means, quats, scales, opacities, sh=None, colors=None):
        self.means, self.quats, self.scales = means, quats, scales
        self.opacities, self.sh, self.colors = opacities, sh, colors
        n = means.shape[0]
        if means.shape != (n, 3) or quats.shape != (n, 4) or scales.shape != (n, 3):
            raise ValueError(
                "Gaussians: means (N,3), quats (N,4), scales (N,3) expected; got "
                f"{tuple(means.shape)}, {tuple(quats.shape)}, {tuple(scales.shape)}"
            )
        self._check_appearance(n, "Gaussians")

    HARMLESS: ClassVar[dict] = {"quats": (1.0, 0.0, 0.0, 0.0), "scales": 1.0}

    def well_formed(self) -> torch.Tensor:
        return (self.quats.norm(dim=-1) > 0) & (self.scales >= 0).all(-1)

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def centers(self) -> torch.Tensor:
        return self.means


@dataclass
class GeneralizedGaussians(Gaussians):
    """N generalized exponential splats (GES, Hamdi et al., CVPR 2024): Gaussians whose falloff
    exp(-0.5 q) (q = d^T Sigma^-1 d, in screen space after the EWA projection) becomes exp(-0.5 q^(beta/2)),
    with a shape ``shapes`` (N,) = beta > 0 each. beta = 2 is the Gaussian; a larger beta gives a flatter
    top and a sharper edge, a smaller one a sharper peak and heavier tails. Rendered exactly for beta >= 1;
    below, the footprint is cut at 11.1 standard deviations (the kernels' tile bounds).

    A subclass for what it shares (validation, ``centers``), but a kind of its own: ``render()`` and every
    writer tell them apart by type, and a Gaussian-only consumer must check ``type(g) is Gaussians``."""

    shapes: torch.Tensor = None

    def __init__(self, means, quats, scales, opacities, shapes, sh=None, colors=None):
        super().__init__(means, quats, scales, opacities, sh=sh, colors=colors)
        n = means.shape[0]
        if shapes is None or shapes.shape != (n,):
            got = None if shapes is None else tuple(shapes.shape)
            raise ValueError(f"GeneralizedGaussians: shapes must be ({n},), got {got}")
        self.shapes = shapes

    HARMLESS: ClassVar[dict] = {**Gaussians.HARMLESS, "shapes": 2.0}

    def well_formed(self) -> torch.Tensor:
        return super().well_formed() & (self.shapes > 0)
