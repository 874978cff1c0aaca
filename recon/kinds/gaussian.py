"""Trainable 3D Gaussians on the shared ``PrimitiveModel`` machinery.

Parameters are stored raw as in 3DGS (DESIGN.md §2): ``means``, ``quats`` (unnormalized wxyz),
``scales`` (log), ``opacities`` (logit), ``sh0`` (N,1,3) and ``shN`` (N,K-1,3).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from sparsesplat.rasterizer import Gaussians
from sparsesplat.rasterizer.sh import rgb_to_sh0

from ..primitive_model import INIT_OPACITY, PrimitiveModel, neighbour_spacing, register_model

PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


@dataclass
class LearningRates:
    """3DGS learning rates; ``means`` is scaled by the scene extent and decays exponentially."""

    means: float = 1.6e-4
    """Positions (times the scene extent); decays to means_final."""
    means_final: float = 1.6e-6
    """Learning rate of the positions at the last step."""
    quats: float = 1e-3
    """Rotations."""
    scales: float = 5e-3
    """Sizes (log scales)."""
    opacities: float = 5e-2
    """Opacities."""
    sh0: float = 2.5e-3
    """Base colour (degree-0 spherical harmonics)."""
    shN: float = 2.5e-3 / 20
    """View-dependent colour (higher spherical-harmonics degrees)."""


@register_model
class GaussianModel(PrimitiveModel):
    """3D Gaussians (``--primitive gaussian``), densified by 3DGS ADC or MCMC."""

    KIND = "gaussian"
    PARAM_NAMES = PARAM_NAMES
    POSITION = "means"

    @staticmethod
    def initial_params(points: np.ndarray, colors: np.ndarray, sh_degree: int, scene_scale: float,
                       init_opacity: float = INIT_OPACITY, init_scale: float = 1.0, device="cpu") -> dict:
        """Raw parameters of isotropic Gaussians at ``points``, sized by the mean distance to their 3 nearest
        neighbours (``init_scale`` times it)."""
        pts = np.asarray(points, dtype=np.float64)
        dist = neighbour_spacing(pts, scene_scale)
        n = len(pts)
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        return {
            "means": t(pts),
            "quats": torch.tensor([1.0, 0, 0, 0], device=device).repeat(n, 1),
            "scales": torch.log(t(dist * init_scale))[:, None].repeat(1, 3),
            "opacities": torch.logit(torch.full((n,), init_opacity, device=device)),
            "sh0": rgb_to_sh0(t(colors))[:, None, :],
            "shN": torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3, device=device),
        }

    @classmethod
    def from_points(cls, points: np.ndarray, colors: np.ndarray, sh_degree: int, lrs: LearningRates,
                    scene_scale: float, init_opacity: float = INIT_OPACITY, init_scale: float = 1.0,
                    device="cpu") -> "GaussianModel":
        """Isotropic Gaussians at ``points`` (``initial_params``), with their optimizers."""
        params = cls.initial_params(points, colors, sh_degree, scene_scale, init_opacity, init_scale, device)
        return cls(params, lrs, scene_scale)

    @classmethod
    def create(cls, points, colors, cfg, scene_scale: float, device="cpu") -> "GaussianModel":
        return cls.from_points(points, colors, cfg.sh_degree, cfg.lrs, scene_scale,
                               init_opacity=cfg.init_opacity, device=device)

    def make_strategy(self, cfg):
        if cfg.strategy not in ("default", "mcmc"):
            raise ValueError(f"Gaussians train with --strategy default or mcmc, not {cfg.strategy!r}")
        return cfg.default if cfg.strategy == "default" else cfg.mcmc

    def shape_regularization(self, max_ratio: float) -> torch.Tensor:
        """Mean over Gaussians of max(0, log(s_max / s_min) - log(max_ratio)) (the anisotropy loss of
        PhysGaussian, in log space): with a few views a Gaussian's extent along the viewing rays is free, and it
        grows into a needle that the training views see end-on and every other view sees as a streak."""
        log_s = self.params["scales"]
        excess = log_s.max(dim=1).values - log_s.min(dim=1).values - float(np.log(max_ratio))
        return excess.clamp_min(0).mean() if len(log_s) else log_s.sum() * 0.0

    def activated(self) -> Gaussians:
        p = self.params
        return Gaussians(
            means=p["means"],
            quats=p["quats"],
            scales=torch.exp(p["scales"]),
            opacities=torch.sigmoid(p["opacities"]),
            sh=torch.cat([p["sh0"], p["shN"]], dim=1),
        )

    def set_means_lr(self, step: int, total_steps: int) -> None:
        self.set_position_lr(step, total_steps)

    def export(self, path, norm) -> Gaussians:
        """scene.ply (standard 3DGS layout) in the user's frame: means scaled and shifted, scales scaled; every
        other field of the activated primitives (a subclass's too, e.g. GES's shapes) as it is."""
        from sparsesplat.rasterizer.kinds.gaussian.ply import save_gaussians_ply

        g = self.activated()
        with torch.no_grad():
            user = {f.name: v.detach().cpu() if torch.is_tensor(v) else v
                    for f in fields(g) for v in [getattr(g, f.name)]}
            user["means"] = torch.as_tensor(norm.invert_points(user["means"].numpy()), dtype=torch.float32)
            user["scales"] = user["scales"] * float(norm.scale)
            out = type(g)(**user)
        save_gaussians_ply(path, out)
        return out
