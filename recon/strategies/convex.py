"""3D Convex Splatting's densification (Held et al. 2024): split convexes whose accumulated sharpness gradient
is high into P smaller children, prune transparent or never-seen convexes.

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
from dataclasses import dataclass

import torch


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
