"""Trainable smooth 3D convexes (3D Convex Splatting, ``--primitive convex``) on ``PrimitiveModel``.

Parameters (DESIGN.md §2): ``points`` (N,P,3) world positions of each convex's P points, ``delta`` and
``sigma`` (N,) as logs (smoothness and sharpness), ``opacities`` (N,) logits, ``sh0`` (N,1,3), ``shN``
(N,K-1,3). Initialization follows the paper: P points on a Fibonacci sphere around every initial point,
its radius ``init_size`` times the mean distance to the 3 nearest neighbours, shifted so the
convex's centroid is the point.

delta and sigma are scaled so a fresh convex has edges about a pixel soft at a focal length of
``reference_focal`` pixels and unit depth (the normalized scene's typical viewing distance): on screen,
u_k = z delta L_k with L_k = |edge| * distance in pixels, and K = sigmoid(-z sigma phi).

Densification (``ConvexStrategy``), the paper's: split convexes whose accumulated sharpness gradient is high
into P smaller children, prune transparent or never-seen convexes.

The split follows the paper: child i of a convex with points x and centroid c is the parent shrunk by
``split_scale`` about c and moved so its centroid sits at c + split_shift (x_i - c), with half the opacity;
children keep the parent's colour and sigma, and delta is divided by ``split_scale`` so edges keep their
sharpness on screen (the edge-line normals shrink with the convex). The signal is the mean over visible
steps of d loss / d log(sigma): positive means the optimizer wants a smoother (less sharp) convex, i.e. one
convex is covering detail it cannot represent.

Pruning: opacity below ``prune_opa``, or no pixel weight above ``prune_weight`` over a whole refinement
window (a convex no training view uses; the paper learns a mask for the same purpose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from sparsesplat.rasterizer import Convexes
from sparsesplat.rasterizer.sh import rgb_to_sh0

from ..primitive_model import INIT_OPACITY, PrimitiveModel, neighbour_spacing, register_model


@dataclass
class ConvexStrategy:
    prune_opa: float = 0.01
    """Prune convexes whose opacity falls below this."""
    prune_weight: float = 1.0 / 255.0
    """Prune convexes whose largest blending weight over a refinement window stays below this."""
    grow_sigma_grad: float = 5e-5
    """Split where the mean d loss / d log(sigma) over visible steps exceeds this."""
    split_scale: float = 0.63
    """Children are the parent shrunk by this factor (the paper's scaling_cloning)."""
    split_shift: float = 1.0
    """Child i's centroid moves this fraction of the way to the parent's point i (shifting_cloning)."""
    split_opacity: float = 0.5
    """Children get this fraction of the parent's opacity (opacity_cloning)."""
    refine_start_iter: int = 300
    """Start splitting and pruning convexes after this many steps."""
    refine_stop_iter: int = 2000
    """Stop splitting and pruning after this many steps."""
    refine_every: int = 100
    """Split and prune every this many steps."""
    reset_every: int = 100_000
    """Clamp opacities to ``reset_opacity`` every this many steps (the paper: 3000; off for short runs)."""
    reset_opacity: float = 0.2
    """The opacity that the periodic reset clamps convexes to."""
    max_primitives: int = 200_000
    """Never grow beyond this many convexes (the primitive budget)."""

    init_sharpness: float = 0.25
    """When a convex is first seen, sigma is set so the view's sharpness z sigma equals this (edges a few
    pixels soft); sigma multiplies the view depth, whose scale the model cannot know before training."""

    def full_schedule(self, iters: int) -> dict:
        """3D Convex Splatting's refinement window (it densifies half the run) for ``iters`` steps (``--full``)."""
        return {"refine_start_iter": 500, "refine_stop_iter": iters // 2}

    def initialize_state(self, model) -> dict:
        n, dev = len(model), model.params["sigma"].device  # on the model's device: no host copy per step
        return {"sigma_grad": torch.zeros(n, device=dev), "count": torch.zeros(n, device=dev),
                "max_weight": torch.zeros(n, device=dev), "calibrated": torch.zeros(n, dtype=torch.bool, device=dev)}

    @torch.no_grad()
    def _calibrate(self, model, state, meta) -> None:
        """sigma = init_sharpness / depth for convexes seen for the first time (depth: mean over the views)."""
        d = meta.depths.detach()
        vis = (meta.visibility & (d > 0)).float()
        depth = (d * vis).sum(0) / vis.sum(0).clamp_min(1)
        new = (vis.sum(0) > 0) & ~state["calibrated"]
        if not bool(new.any()):
            return
        idx = new.nonzero()[:, 0]
        values = torch.log(self.init_sharpness / depth[new]).to(model.params["sigma"])
        model.overwrite(idx, {"sigma": values})
        state["calibrated"] |= new

    def regularization(self, model):
        return 0.0

    @torch.no_grad()
    def step_post_backward(self, model, state, step: int, meta) -> None:
        if self.init_sharpness > 0:
            self._calibrate(model, state, meta)
        if step >= self.refine_stop_iter:
            return
        grad = model.params["sigma"].grad
        vis = meta.visibility.any(0)
        if grad is not None:
            state["sigma_grad"] += grad.detach() * vis
        state["count"] += vis.float()
        state["max_weight"] = torch.maximum(state["max_weight"], meta.max_weight.detach().amax(0))
        if step > self.refine_start_iter and step % self.refine_every == 0:
            self._refine(model, state)
            state.update(self.initialize_state(model))
            state["calibrated"][:] = True  # children inherit calibrated sigmas; the unseen were pruned
        if step > 0 and step % self.reset_every == 0:
            model.cap_opacities(self.reset_opacity)

    def step_post_optimizer(self, model, state, step: int) -> None:
        return

    def _refine(self, model, state) -> None:
        """Split and prune together, so both masks index the convexes the statistics were gathered on."""
        p = model.params
        dev = p["points"].device
        prune = (torch.sigmoid(p["opacities"]) < self.prune_opa) | (state["max_weight"] < self.prune_weight)
        mean = state["sigma_grad"] / state["count"].clamp_min(1)
        split = (mean > self.grow_sigma_grad) & ~prune
        P = p["points"].shape[1]
        room = max(self.max_primitives - len(model) + int(prune.sum()), 0) // max(P - 1, 1)
        if int(split.sum()) > room:  # keep the strongest signals
            chosen = torch.zeros_like(split)
            chosen[torch.argsort(torch.where(split, mean, torch.full_like(mean, -torch.inf)), descending=True)[:room]] = True
            split &= chosen
        gone = split | prune
        if bool(gone.all()) and not bool(split.any()):
            return  # never remove every convex
        n_new = 0
        if split.any():
            children = split_children(p, split, self.split_scale, self.split_shift, self.split_opacity)
            n_new = len(children["points"])
            model.append(children)
        if gone.any():
            model.remove(torch.cat([gone, torch.zeros(n_new, dtype=torch.bool, device=dev)]))


def split_children(params: dict, sel: torch.Tensor, scale: float, shift: float, opacity_factor: float) -> dict:
    """The P children of each selected convex (raw parameters, children of convex j at rows i * M + j)."""
    pts = params["points"][sel].detach()  # (M,P,3)
    M, P = pts.shape[:2]
    c = pts.mean(dim=1, keepdim=True)
    centres = c + shift * (pts - c)  # (M,P,3): child i centred towards point i
    kids = centres.transpose(0, 1)[:, :, None, :] + scale * (pts - c)[None]  # (P,M,P,3)
    out = {k: v[sel].detach().repeat(P, *([1] * (v.dim() - 1))) for k, v in params.items()}
    out["points"] = kids.reshape(P * M, P, 3)
    opac = torch.sigmoid(params["opacities"][sel].detach()) * opacity_factor
    out["opacities"] = torch.logit(opac.clamp(1e-6, 1 - 1e-6)).repeat(P)
    out["delta"] = (params["delta"][sel].detach() - math.log(scale)).repeat(P)
    return out


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
                    scene_scale: float, init_opacity: float = INIT_OPACITY, device="cpu") -> "ConvexModel":
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
