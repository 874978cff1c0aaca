"""Trainable smooth 3D convexes (3D Convex Splatting, ``--primitive convex``) on ``PrimitiveModel``.

Parameters (DESIGN.md §2): ``points`` (N,P,3) world positions of each convex's P points, ``delta`` and
``sigma`` (N,) as logs (smoothness and sharpness), ``opacities`` (N,) logits, ``sh0`` (N,1,3), ``shN``
(N,K-1,3). Initialization follows the paper: P points on a Fibonacci sphere around every initial point,
its radius ``init_size`` times the mean distance to the 3 nearest neighbours, shifted so the
convex's centroid is the point.

delta and sigma are scaled so a fresh convex has edges about a pixel soft at a focal length of
``reference_focal`` pixels and unit depth (the normalized scene's typical viewing distance): on screen,
u_k = z delta L_k with L_k = |edge| * distance in pixels, and K = sigmoid(-z sigma phi).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sparsesplat.rasterizer import Convexes
from sparsesplat.rasterizer.sh import rgb_to_sh0

from .primitive_model import PrimitiveModel, neighbour_spacing, register_model
from .strategies.convex import ConvexStrategy

PARAM_NAMES = ("points", "delta", "sigma", "opacities", "sh0", "shN")


@dataclass
class ConvexLearningRates:
    """Adam learning rates; ``points`` is scaled by the scene extent and decays to ``points_final``."""

    points: float = 2e-4
    """Convex points (times the scene extent); decays to points_final."""
    points_final: float = 2e-6
    """Learning rate of the convex points at the last step."""
    delta: float = 5e-3
    """Smoothness delta of the convex edges."""
    sigma: float = 4.5e-3
    """Sharpness sigma."""
    opacities: float = 2.5e-2
    """Opacities."""
    sh0: float = 2.5e-3
    """Base colour (degree-0 spherical harmonics)."""
    shN: float = 2.5e-3 / 20
    """View-dependent colour (higher spherical-harmonics degrees)."""


@dataclass
class ConvexSettings:
    """How convexes are initialized, optimized and densified (``--train.convex.*``)."""

    points_per_convex: int = 6
    """P, the points per convex (3 to 8; the paper uses 6)."""
    init_size: float = 1.2
    """Initial radius as a multiple of the mean distance to the 3 nearest initial points."""
    reference_focal: float = 500.0
    """Focal length (pixels) at which a fresh convex's edges are about 2 pixels soft."""
    init_sigma: float = 1.0
    """Initial sharpness sigma (at unit depth: K falls from 0.88 to 0.12 over about 2 pixels)."""
    lrs: ConvexLearningRates = field(default_factory=ConvexLearningRates)
    strategy: ConvexStrategy = field(default_factory=ConvexStrategy)


def fibonacci_sphere(P: int) -> np.ndarray:
    """P nearly uniform unit vectors (P,3): heights evenly spaced in [-1, 1], turning by the golden angle."""
    i = np.arange(P, dtype=np.float64)
    z = 1.0 - 2.0 * i / max(P - 1, 1)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    theta = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=-1)


@register_model
class ConvexModel(PrimitiveModel):
    """Smooth 3D convexes (``--primitive convex``), densified by the paper's sigma-gradient split."""

    KIND = "convex"
    PARAM_NAMES = PARAM_NAMES
    POSITION = "points"

    @classmethod
    def from_points(cls, points: np.ndarray, colors: np.ndarray, sh_degree: int, settings: ConvexSettings,
                    scene_scale: float, init_opacity: float = 0.1, device="cpu") -> "ConvexModel":
        pts = np.asarray(points, dtype=np.float64)
        P = settings.points_per_convex
        if not 3 <= P <= 8:
            raise ValueError(f"points_per_convex must be between 3 and 8, got {P}")
        dist = neighbour_spacing(pts, scene_scale)
        radius = settings.init_size * dist
        dirs = fibonacci_sphere(P)
        dirs -= dirs.mean(axis=0)  # so each convex's centroid (its depth and SH position) is its point
        shape = pts[:, None, :] + radius[:, None, None] * dirs[None]
        n = len(pts)
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        # edges ~ radius: u_k ~ z delta (f r / z)(f d / z) per pixel distance d, so delta ~ 2 / (f r) makes the
        # line values grow ~2 per pixel at unit depth
        delta = 2.0 / (settings.reference_focal * radius)
        params = {
            "points": t(shape),
            "delta": torch.log(t(delta)),
            "sigma": torch.full((n,), float(np.log(settings.init_sigma)), device=device),
            "opacities": torch.logit(torch.full((n,), init_opacity, device=device)),
            "sh0": rgb_to_sh0(t(colors))[:, None, :],
            "shN": torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3, device=device),
        }
        return cls(params, settings.lrs, scene_scale)

    @classmethod
    def create(cls, points, colors, cfg, scene_scale: float, device="cpu") -> "ConvexModel":
        return cls.from_points(points, colors, cfg.sh_degree, cfg.convex, scene_scale,
                               init_opacity=cfg.init_opacity, device=device)

    def make_strategy(self, cfg):
        if cfg.strategy not in ("default", "convex"):
            raise ValueError(f"convexes train with --strategy default (3D Convex Splatting's), not {cfg.strategy!r}")
        return cfg.convex.strategy

    def activated(self) -> Convexes:
        p = self.params
        return Convexes(p["points"], torch.exp(p["delta"]), torch.exp(p["sigma"]), torch.sigmoid(p["opacities"]),
                        sh=torch.cat([p["sh0"], p["shN"]], dim=1))

    def export(self, path, norm) -> Convexes:
        """scene.ply in the user's frame (``rasterizer/kinds/convex/ply.py`` layout). Depths grow by norm.scale
        there, so delta and sigma (which multiply the view depth) shrink by it: every render is unchanged."""
        from sparsesplat.rasterizer.kinds.convex.ply import save_convexes_ply

        cv = self.activated()
        with torch.no_grad():
            P = cv.points.shape[1]
            flat = cv.points.detach().cpu().reshape(-1, 3).numpy()
            points = torch.as_tensor(norm.invert_points(flat), dtype=torch.float32).reshape(-1, P, 3)
            s = float(norm.scale)
            user = Convexes(points, cv.delta.detach().cpu() / s, cv.sigma.detach().cpu() / s,
                            cv.opacities.detach().cpu(), sh=cv.sh.detach().cpu())
        save_convexes_ply(path, user)
        return user
