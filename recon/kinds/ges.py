"""Trainable GES (generalized exponential splats, Hamdi et al., CVPR 2024): 3D Gaussians with a learned
shape each, ``--primitive ges``.

A GES splat is a Gaussian whose screen-space falloff exp(-0.5 q) becomes exp(-0.5 q^(beta/2)): beta > 2
flattens its top and sharpens its edge (a few splats can draw a sharp boundary that Gaussians need many
for), beta < 2 sharpens its peak. Everything else is ``GaussianModel``'s: the parameters, their learning
rates, the initialization, the densification strategies (which copy every parameter, ``shapes`` included),
the anisotropy regularizer and the export (scene.ply gains the property ``beta``). The shape is stored raw,
beta = SHAPE_MIN + softplus(raw): it starts at 2 (the Gaussian) and never falls below 1, where the
rasterizer's footprint would cut the heavy tail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sparsesplat.rasterizer import GeneralizedGaussians

from ..primitive_model import register_model
from .gaussian import PARAM_NAMES as GAUSSIAN_PARAMS
from .gaussian import GaussianModel, LearningRates

SHAPE_MIN = 1.0


@dataclass
class GesLearningRates(LearningRates):
    """The Gaussian learning rates and the shapes' (raw, softplus-activated) one."""

    shapes: float = 5e-3


@dataclass
class GesOptions:
    """Settings of ``--primitive ges`` (its Gaussian parameters train with the Gaussian learning rates)."""

    shapes_lr: float = 5e-3
    """Learning rate of the shapes (raw values: beta = 1 + softplus(raw))."""
    init_shape: float = 2.0
    """Shape beta every splat starts with (2: a Gaussian)."""


def shape_to_raw(beta: torch.Tensor) -> torch.Tensor:
    """Inverse of beta = SHAPE_MIN + softplus(raw), for beta > SHAPE_MIN."""
    x = (beta - SHAPE_MIN).clamp_min(1e-6)
    return x + torch.log(-torch.expm1(-x))


@register_model
class GesModel(GaussianModel):
    """GES splats (``--primitive ges``): Gaussians with a learned shape, densified by 3DGS ADC or MCMC."""

    KIND = "ges"
    PARAM_NAMES = GAUSSIAN_PARAMS + ("shapes",)

    @classmethod
    def create(cls, points, colors, cfg, scene_scale: float, device="cpu") -> "GesModel":
        lrs = GesLearningRates(**asdict(cfg.lrs), shapes=cfg.ges.shapes_lr)
        if not cfg.ges.init_shape > SHAPE_MIN:
            raise ValueError(f"--ges.init-shape must exceed {SHAPE_MIN:g}, got {cfg.ges.init_shape}")
        params = cls.initial_params(points, colors, cfg.sh_degree, scene_scale, cfg.init_opacity, device=device)
        beta = torch.full((len(params["means"]),), float(cfg.ges.init_shape), device=device)
        return cls({**params, "shapes": shape_to_raw(beta)}, lrs, scene_scale)

    def activated(self) -> GeneralizedGaussians:
        g = super().activated()
        shapes = SHAPE_MIN + torch.nn.functional.softplus(self.params["shapes"])
        return GeneralizedGaussians(g.means, g.quats, g.scales, g.opacities, shapes, sh=g.sh)


__all__ = ["GesModel", "GesOptions", "GesLearningRates", "SHAPE_MIN", "shape_to_raw"]
