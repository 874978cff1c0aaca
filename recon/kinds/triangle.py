"""Trainable triangles (Triangle Splatting, Held et al. 2025) on the shared ``PrimitiveModel`` machinery.

Parameters are stored raw: ``vertices`` (N,3,3) world positions, ``sigma`` log of the window sharpness,
``opacities`` logit, ``sh0`` (N,1,3) and ``shN`` (N,K-1,3). Initialization: one small random triangle per
point of the initial cloud (equilateral, random orientation, circumradius from the nearest neighbours).
Export: ``scene.ply`` in the triangle layout (``rasterizer/kinds/triangle/ply.py``) plus
``scene_mesh.{ply,obj,glb}`` with per-face colours.

Densification (``TriangleStrategy``): Triangle Splatting's, MCMC-like with a primitive cap.

Every ``refine_every`` steps inside the refinement window:

- death: triangles whose opacity fell to ``min_opacity``, or whose largest blending weight over the views
  seen since the last refinement stayed below ``min_weight`` (they contribute to no pixel), are removed;
- birth: the freed budget plus ``grow_rate`` growth (up to ``cap_max``) is spent on midpoint subdivision:
  source triangles, drawn without replacement with probability proportional to opacity among those whose
  longest edge exceeds ``subdivide_size`` (a fraction of the scene scale; all alive ones when none does),
  are split at their edge midpoints into four children that tile the parent exactly (the parent becomes
  the middle child, three corner children are added), each inheriting the parent's sigma, opacity and colour.

After each optimizer step, nearly transparent triangles are translated by noise proportional to their
squared size (as 3DGS-MCMC moves Gaussians) so dead weight explores instead of lingering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sparsesplat.rasterizer import Triangles
from sparsesplat.rasterizer.sh import rgb_to_sh0

from ..primitive_model import PrimitiveModel, neighbour_spacing, register_model


def subdivide(vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint subdivision of (M,3,3) triangles: (middle child (M,3,3), corner children (M,3,3,3))."""
    v0, v1, v2 = vertices.unbind(1)
    m01, m12, m20 = 0.5 * (v0 + v1), 0.5 * (v1 + v2), 0.5 * (v2 + v0)
    middle = torch.stack([m01, m12, m20], 1)
    corners = torch.stack([torch.stack([v0, m01, m20], 1), torch.stack([m01, v1, m12], 1),
                           torch.stack([m20, m12, v2], 1)], 1)
    return middle, corners


def longest_edge(vertices: torch.Tensor) -> torch.Tensor:
    return (vertices - vertices.roll(1, dims=1)).norm(dim=-1).amax(-1)


@dataclass
class TriangleStrategy:
    cap_max: int = 100_000
    """The most triangles the scene may hold."""
    grow_rate: float = 0.05
    """Growth of the count per refinement (on top of replacing the dead)."""
    min_opacity: float = 0.005
    """Triangles at or below this opacity die."""
    min_weight: float = 0.005
    """Triangles whose largest blending weight since the last refinement stayed below this die (0: off)."""
    subdivide_size: float = 0.002
    """Only triangles whose longest edge exceeds this fraction of the scene scale are subdivided."""
    refine_start_iter: int = 300
    """Start replacing dead triangles and adding new ones after this many steps."""
    refine_stop_iter: int = 2500
    """Stop replacing and adding triangles after this many steps."""
    refine_every: int = 100
    """Replace and add triangles every this many steps."""
    noise_lr: float = 2e4
    """Position noise for nearly transparent triangles, scaled by the current vertex learning rate (the
    product matches 3DGS-MCMC's 5e5 x 1.6e-4 at the default vertex learning rate)."""
    opacity_reg: float = 0.005
    """Weight of the mean opacity in the loss (pushes unneeded triangles towards death)."""

    def full_schedule(self, iters: int) -> dict:
        """Triangle Splatting's refinement window for a run of ``iters`` steps (``--full``)."""
        return {"refine_start_iter": 500, "refine_stop_iter": int(iters * 0.8)}

    def initialize_state(self, model) -> dict:
        # on the model's device: no host copy per step
        return {"max_weight": torch.zeros(len(model), device=model.params["opacities"].device), "views": 0}

    def regularization(self, model):
        if self.opacity_reg <= 0:
            return 0.0
        return self.opacity_reg * torch.sigmoid(model.params["opacities"]).mean()

    @torch.no_grad()
    def step_post_backward(self, model, state, step: int, meta) -> None:
        if step >= self.refine_stop_iter:
            return
        w = meta.max_weight.detach().amax(0).float()
        if len(w) == len(state["max_weight"]):
            state["max_weight"] = torch.maximum(state["max_weight"], w)
            state["views"] += 1
        if step > self.refine_start_iter and step % self.refine_every == 0:
            self.refine(model, state)
            state.update(self.initialize_state(model))

    @torch.no_grad()
    def step_post_optimizer(self, model, state, step: int) -> None:
        if self.noise_lr <= 0 or step >= self.refine_stop_iter:
            return
        p = model.params
        lr = model.optimizers["vertices"].param_groups[0]["lr"]
        verts = p["vertices"]
        size = (verts - verts.mean(1, keepdim=True)).norm(dim=-1).mean(-1)  # (N,)
        gate = torch.sigmoid(-100.0 * (torch.sigmoid(p["opacities"]) - 0.005))
        noise = torch.randn(len(verts), 1, 3, device=verts.device) * (size**2 * gate * self.noise_lr * lr)[:, None, None]
        verts.add_(noise)

    def refine(self, model, state) -> dict:
        """One death/birth round; returns counts {'dead', 'born'} for logging and tests."""
        p = model.params
        dev = p["vertices"].device
        n = len(model)
        op = torch.sigmoid(p["opacities"]).detach()
        dead = op <= self.min_opacity
        if self.min_weight > 0 and state.get("views", 0) > 0:
            dead |= state["max_weight"] < self.min_weight
        alive = ~dead
        if not alive.any():  # never kill everything
            return {"dead": 0, "born": 0}
        target = min(self.cap_max, int(math.ceil((1 + self.grow_rate) * n)))
        births = max(0, target - int(alive.sum()))
        big = longest_edge(p["vertices"].detach()) > self.subdivide_size * model.scene_scale
        candidates = alive & big
        if not candidates.any():
            candidates = alive
        n_src = min(births // 3, int(candidates.sum()))
        if n_src > 0:
            weights = (op * candidates).clamp_min(0)
            weights = torch.where(candidates & (weights <= 0), torch.full_like(weights, 1e-12), weights)
            sources = torch.multinomial(weights, n_src, replacement=False)
            middle, corners = subdivide(p["vertices"][sources].detach())
            model.overwrite(sources, {"vertices": middle})
            p = model.params
            born = {k: p[k][sources].detach().repeat_interleave(3, dim=0) for k in p}
            born["vertices"] = corners.reshape(-1, 3, 3)
            model.append(born)
            dead = torch.cat([dead, torch.zeros(3 * n_src, dtype=torch.bool, device=dev)])
        if dead.any():
            model.remove(dead)
        return {"dead": int(dead.sum()), "born": 3 * n_src}


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
