"""Trainable triangles (Triangle Splatting, Held et al. 2025) on the shared ``PrimitiveModel`` machinery.

Parameters are stored raw: ``vertices`` (N,3,3) world positions, ``sigma`` log of the window sharpness,
``opacities`` logit, ``sh0`` (N,1,3) and ``shN`` (N,K-1,3). Initialization: one small random triangle per
point of the initial cloud (equilateral, random orientation, circumradius from the nearest neighbours).
Densification: ``TriangleStrategy`` (strategies/triangles.py). Export: ``scene.ply`` in the triangle layout
(``rasterizer/kinds/triangle/ply.py``) plus ``scene_mesh.{ply,obj,glb}`` with per-face colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sparsesplat.rasterizer import Triangles
from sparsesplat.rasterizer.sh import rgb_to_sh0

from .primitive_model import PrimitiveModel, neighbour_spacing, register_model
from .strategies.triangles import TriangleStrategy

PARAM_NAMES = ("vertices", "sigma", "opacities", "sh0", "shN")


@dataclass
class TriangleLearningRates:
    """Adam learning rates for triangles; ``vertices`` is scaled by the scene extent and decays."""

    vertices: float = 3e-3
    """Triangle vertices (times the scene extent); decays to vertices_final."""
    vertices_final: float = 3e-5
    """Learning rate of the vertices at the last step."""
    sigma: float = 2e-2
    """Window sharpness sigma."""
    opacities: float = 5e-2
    """Opacities."""
    sh0: float = 2.5e-3
    """Base colour (degree-0 spherical harmonics)."""
    shN: float = 2.5e-3 / 20
    """View-dependent colour (higher spherical-harmonics degrees)."""


@dataclass
class TriangleOptions:
    """Settings of ``--primitive triangle``."""

    lrs: TriangleLearningRates = field(default_factory=TriangleLearningRates)
    strategy: TriangleStrategy = field(default_factory=TriangleStrategy)
    init_sigma: float = 1.0
    """Initial window sharpness (0 = solid triangle; larger concentrates opacity at the incentre)."""
    init_opacity: float = 0.3
    """Opacity of every triangle at the start."""
    init_size: float = 3.0
    """Initial circumradius as a multiple of the mean distance to the 3 nearest points (about a Gaussian's
    3-sigma reach at the same spacing, so the initial triangles overlap)."""
    mesh_min_opacity: float = 0.1
    """Triangles more transparent than this are left out of the exported mesh."""


def random_triangles_at(points: np.ndarray, radii: np.ndarray, seed: int = 0) -> np.ndarray:
    """Equilateral triangles (M,3,3) centred at ``points`` (M,3) with circumradius ``radii`` (M,), in a
    uniformly random orientation."""
    rng = np.random.default_rng(seed)
    n = rng.standard_normal((len(points), 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    helper = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    u = np.cross(n, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.cross(n, u)
    phase = rng.uniform(0, 2 * np.pi, len(points))[:, None]
    angles = phase + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])[None]  # (M,3)
    offs = np.cos(angles)[..., None] * u[:, None] + np.sin(angles)[..., None] * w[:, None]
    return points[:, None, :] + radii[:, None, None] * offs


@register_model
class TriangleModel(PrimitiveModel):
    """Triangles (``--primitive triangle``), densified by the Triangle Splatting strategy."""

    KIND = "triangle"
    PARAM_NAMES = PARAM_NAMES
    POSITION = "vertices"

    def __init__(self, params, lrs, scene_scale: float, options: TriangleOptions | None = None):
        super().__init__(params, lrs, scene_scale)
        self.options = options or TriangleOptions()

    @classmethod
    def from_points(cls, points: np.ndarray, colors: np.ndarray, sh_degree: int, options: TriangleOptions,
                    scene_scale: float, seed: int = 0, device="cpu") -> "TriangleModel":
        pts = np.asarray(points, dtype=np.float64)
        dist = neighbour_spacing(pts, scene_scale) * options.init_size
        verts = random_triangles_at(pts, dist, seed)
        n = len(pts)
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        params = {
            "vertices": t(verts),
            "sigma": torch.full((n,), float(np.log(max(options.init_sigma, 1e-6))), device=device),
            "opacities": torch.logit(torch.full((n,), options.init_opacity, device=device)),
            "sh0": rgb_to_sh0(t(colors))[:, None, :],
            "shN": torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3, device=device),
        }
        return cls(params, options.lrs, scene_scale, options)

    @classmethod
    def create(cls, points, colors, cfg, scene_scale: float, device="cpu") -> "TriangleModel":
        return cls.from_points(points, colors, cfg.sh_degree, cfg.triangle, scene_scale, seed=cfg.seed,
                               device=device)

    @classmethod
    def from_state_dict(cls, state: dict, lrs, device="cpu") -> "TriangleModel":
        model = super().from_state_dict(state, lrs, device)
        model.options = state.get("options", TriangleOptions())
        return model

    def state_dict(self) -> dict:
        return {**super().state_dict(), "options": self.options}

    def make_strategy(self, cfg):
        if cfg.strategy not in ("default", "mcmc"):
            raise ValueError(f"triangles train with their own strategy (--strategy default), not {cfg.strategy!r}")
        return cfg.triangle.strategy

    def activated(self) -> Triangles:
        p = self.params
        return Triangles(p["vertices"], torch.exp(p["sigma"]), torch.sigmoid(p["opacities"]),
                         sh=torch.cat([p["sh0"], p["shN"]], dim=1))

    def export(self, path, norm):
        """``path`` (scene.ply, triangle layout) and a mesh beside it, all in the user's frame."""
        from sparsesplat.rasterizer.kinds.triangle.ply import (RawTriangles, mesh_arrays, save_triangle_mesh,
                                                        save_triangles_ply)

        path = Path(path)
        p = {k: v.detach().cpu() for k, v in self.params.items()}
        verts = torch.as_tensor(norm.invert_points(p["vertices"].numpy().astype(np.float64)), dtype=torch.float32)
        # window sharpness and opacity are scale-free: the window depends only on ratios of distances
        raw = RawTriangles(verts, p["sigma"], p["opacities"], torch.cat([p["sh0"], p["shN"]], dim=1))
        save_triangles_ply(path, raw)
        arrays = mesh_arrays(verts, p["sh0"][:, 0], torch.sigmoid(p["opacities"]), self.options.mesh_min_opacity)
        for suffix in (".ply", ".obj", ".glb"):
            save_triangle_mesh(path.with_name(path.stem + "_mesh" + suffix), *arrays)
        return raw.activated()
