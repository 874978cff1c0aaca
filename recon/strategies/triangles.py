"""Triangle Splatting densification (Held et al. 2025), MCMC-like with a primitive cap.

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
from dataclasses import dataclass

import torch


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
