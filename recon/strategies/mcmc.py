"""3DGS as MCMC (Kheradmand et al. 2024): a fixed budget of Gaussians; dead ones (low opacity) are
relocated onto live ones with opacity and scale adjusted so the rendered image barely changes; new ones
are added by the same rule up to a cap; positions get noise scaled by their covariance and transparency."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sparsesplat.rasterizer.quaternions import quat_to_rotmat

N_MAX = 51  # most copies a single Gaussian may receive in one relocation


def _binoms(n: int, device) -> torch.Tensor:
    b = torch.zeros(n, n, device=device)
    for i in range(n):
        for k in range(i + 1):
            b[i, k] = math.comb(i, k)
    return b


def split_preserving(opacities: torch.Tensor, scales: torch.Tensor, counts: torch.Tensor):
    """Opacity and scale for each of ``counts`` copies of a Gaussian so that their composite matches it.

    o' = 1 - (1 - o)^(1/n);  s' = s * o / sum_{i=1..n} sum_{k=0..i-1} C(i-1,k) (-1)^k o'^(k+1) / sqrt(k+1)
    (the paper's Eq. 9). opacities (M,), scales (M,3), counts (M,) >= 1.
    """
    counts = counts.clamp(1, N_MAX).long()
    new_o = 1.0 - torch.pow(1.0 - opacities, 1.0 / counts)
    binom = _binoms(N_MAX, opacities.device)
    k = torch.arange(N_MAX, device=opacities.device)
    # term[i, k] for i = 1..N_MAX (row i-1), summed over k < i and i <= n
    sign = (-1.0) ** k
    powers = new_o[:, None] ** (k[None] + 1)  # (M,K)
    inner = (binom[None] * (sign / torch.sqrt(k + 1.0))[None, None] * powers[:, None, :]).sum(-1)  # (M,I)
    use = torch.arange(1, N_MAX + 1, device=opacities.device)[None] <= counts[:, None]
    denom = (inner * use).sum(-1)
    new_s = scales * (opacities / denom)[:, None]
    return new_o.clamp(1e-6, 1 - 1e-6), new_s


@dataclass
class MCMCStrategy:
    cap_max: int = 300_000
    """The most Gaussians the scene may hold."""
    noise_lr: float = 5e5
    """Position noise, scaled by the current position learning rate."""
    min_opacity: float = 0.005
    """Gaussians below this opacity are dead and get relocated."""
    grow_rate: float = 0.05
    """Growth of the Gaussian count per refinement, as a fraction (up to --mcmc.cap-max)."""
    refine_start_iter: int = 500
    """Start relocating and adding Gaussians after this many steps."""
    refine_stop_iter: int = 25_000
    """Stop relocating and adding Gaussians after this many steps."""
    refine_every: int = 100
    """Relocate and add Gaussians every this many steps."""
    opacity_reg: float = 0.01
    """Weight of the mean opacity in the loss (frees Gaussians that are not needed)."""
    scale_reg: float = 0.01
    """Weight of the mean scale in the loss (keeps Gaussians small)."""

    def full_schedule(self, iters: int) -> dict:
        """3DGS-MCMC's refinement window for a run of ``iters`` steps (``--full``)."""
        return {"refine_start_iter": 500, "refine_stop_iter": int(iters * 0.8)}

    def initialize_state(self, model) -> dict:
        return {}

    def regularization(self, model):
        p = model.params
        return self.opacity_reg * torch.sigmoid(p["opacities"]).mean() + self.scale_reg * torch.exp(p["scales"]).mean()

    @torch.no_grad()
    def step_post_backward(self, model, state, step: int, meta) -> None:
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            self._relocate(model)
            self._add(model)

    @torch.no_grad()
    def step_post_optimizer(self, model, state, step: int) -> None:
        p = model.params
        lr = model.optimizers["means"].param_groups[0]["lr"]
        op = torch.sigmoid(p["opacities"])
        R = quat_to_rotmat(torch.nn.functional.normalize(p["quats"], dim=-1))
        S = torch.exp(p["scales"])
        cov = R @ torch.diag_embed(S**2) @ R.transpose(1, 2)
        # mostly the nearly transparent ones move: sigmoid(-100 (o - 0.005)) as in the paper
        gate = torch.sigmoid(-100.0 * (op - 0.005))[:, None]
        noise = (cov @ torch.randn_like(p["means"])[..., None])[..., 0] * gate * self.noise_lr * lr
        p["means"].add_(noise)

    def _sample_sources(self, model, n: int, alive: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(model.params["opacities"]).detach() * alive
        if probs.sum() <= 0:
            probs = alive.float()
        return torch.multinomial(probs, n, replacement=True)

    def _clone_onto(self, model, sources: torch.Tensor):
        """New parameters for the sources (adjusted for the number of copies each now has)."""
        p = model.params
        counts = torch.bincount(sources, minlength=len(model))[sources] + 1
        o, s = split_preserving(torch.sigmoid(p["opacities"][sources]), torch.exp(p["scales"][sources]), counts)
        vals = {k: p[k][sources].detach().clone() for k in p}
        vals["opacities"] = torch.logit(o)
        vals["scales"] = torch.log(s)
        return vals

    def _relocate(self, model) -> None:
        dead = torch.sigmoid(model.params["opacities"]) <= self.min_opacity
        n_dead = int(dead.sum())
        if n_dead == 0 or n_dead == len(model):
            return
        sources = self._sample_sources(model, n_dead, ~dead)
        vals = self._clone_onto(model, sources)
        model.overwrite(sources, {"opacities": vals["opacities"], "scales": vals["scales"]})
        model.overwrite(dead.nonzero()[:, 0], vals)

    def _add(self, model) -> None:
        n = len(model)
        target = min(self.cap_max, int(math.ceil((1 + self.grow_rate) * n)))
        if target <= n:
            return
        alive = torch.ones(n, dtype=torch.bool, device=model.params["means"].device)
        sources = self._sample_sources(model, target - n, alive)
        vals = self._clone_onto(model, sources)
        model.overwrite(sources, {"opacities": vals["opacities"], "scales": vals["scales"]})
        model.append(vals)
