"""3DGS adaptive density control: clone small / split large Gaussians with high screen-space gradient,
prune transparent or oversized ones, and periodically reset opacities (Kerbl et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsesplat.rasterizer.quaternions import quat_to_rotmat


@dataclass
class DefaultStrategy:
    prune_opa: float = 0.005
    """Prune Gaussians whose opacity falls below this."""
    grow_grad2d: float = 0.0002
    """Densify where the mean screen-space gradient (NDC units) exceeds this (3DGS: 0.0002). The CLI's default is
    0.0004 (TrainConfig): 3DGS set its threshold for a plain photometric loss on many views, ours adds the
    binocular warp and dropout on a few, and densifying less keeps half the Gaussians on fern llff3 and DTU
    scan37 (a third fewer on lego) at equal or better held-out PSNR (benchmarks/results/quality.md, eleventh
    session)."""
    grow_scale3d: float = 0.01
    """Clone below this size (fraction of the scene scale), split above."""
    prune_scale3d: float = 0.1
    """After the first opacity reset, prune Gaussians larger than this (fraction of the scene scale)."""
    prune_weight: float = 0.0
    """Prune Gaussians whose largest blending weight in every training view rendered since the last refinement
    stayed below this: hidden behind others or too faint to show, the photos do not constrain them, yet other
    views see them (0 disables; 3DGS has no such rule). The CLI's default is 0.01 (TrainConfig): measured (fast
    schedule, benchmarks/results/quality.md) lego blender8 24.43 -> 24.54 dB, DTU scan37 dtu3 masked
    13.67 -> 13.80 (three seeds each), fern llff3 22.39 -> 22.40, with 8-10% fewer Gaussians."""
    refine_start_iter: int = 500
    """Start densifying (clone, split, prune) after this many steps."""
    refine_stop_iter: int = 15_000
    """Stop densifying after this many steps."""
    refine_every: int = 100
    """Densify every this many steps."""
    reset_every: int = 3000
    """Reset all opacities to a low value every this many steps (3DGS: 3000)."""
    max_primitives: int = 2_000_000
    """Never grow beyond this many Gaussians (a memory guard)."""

    def full_schedule(self, iters: int) -> dict:
        """The papers' (3DGS) refinement window for a run of ``iters`` steps (``--full``)."""
        return {"refine_start_iter": 500, "refine_stop_iter": iters // 2, "refine_every": 100, "reset_every": 3000}

    def initialize_state(self, model) -> dict:
        n, dev = len(model), model.params["means"].device
        # on the model's device: moving the per-step statistics to the host would sync the GPU every step
        return {"grad2d": torch.zeros(n, device=dev), "count": torch.zeros(n, device=dev),
                "max_weight": torch.zeros(n, device=dev), "views": 0}

    def regularization(self, model):
        return 0.0

    @torch.no_grad()
    def step_post_backward(self, model, state, step: int, meta) -> None:
        if step >= self.refine_stop_iter or meta.means2d.grad is None:
            return
        grad = meta.means2d.grad.detach().clone()  # (C,N,2) pixels
        grad[..., 0] *= meta.width / 2.0 * grad.shape[0]
        grad[..., 1] *= meta.height / 2.0 * grad.shape[0]
        vis = meta.visibility
        state["grad2d"] += (grad.norm(dim=-1) * vis).sum(0)
        state["count"] += vis.sum(0).float()
        if "max_weight" in state:  # (absent from the checkpoints of older runs)
            state["max_weight"] = torch.maximum(state["max_weight"], meta.max_weight.detach().amax(0).float())
            state["views"] += 1
        if step > self.refine_start_iter and step % self.refine_every == 0:
            unseen = self._unseen(state, step)
            split = self._grow(model, state)
            if unseen is not None and split is not None:  # the split parents are gone; the rest keep their order
                unseen = unseen[~split]
            self._prune(model, step, unseen)
            state.update(self.initialize_state(model))
        if step > 0 and step % self.reset_every == 0:
            model.cap_opacities(2 * self.prune_opa)

    def step_post_optimizer(self, model, state, step: int) -> None:
        return

    def _grow(self, model, state) -> torch.Tensor | None:
        """Clone and split; returns which of the Gaussians there were are gone (split parents), or None."""
        dev = model.params["means"].device
        avg = state["grad2d"] / state["count"].clamp_min(1)
        high = avg > self.grow_grad2d
        big = torch.exp(model.params["scales"]).max(-1).values > self.grow_scale3d * model.scene_scale
        room = self.max_primitives - len(model)
        dup = high & ~big
        split = high & big
        if room <= 0:
            return None
        if int(dup.sum()) + int(split.sum()) > room:  # keep the strongest gradients
            order = torch.argsort(avg * high, descending=True)[:room]
            chosen = torch.zeros_like(high)
            chosen[order] = True
            dup, split = dup & chosen, split & chosen
        p, parents = model.params, split
        if dup.any():
            model.append({k: p[k][dup].detach() for k in p})
            split = torch.cat([split, torch.zeros(int(dup.sum()), dtype=torch.bool, device=dev)])
        if split.any():
            p = model.params
            scales = torch.exp(p["scales"][split])
            R = quat_to_rotmat(torch.nn.functional.normalize(p["quats"][split], dim=-1))
            offsets = (R @ (scales * torch.randn(2, *scales.shape, device=dev))[..., None])[..., 0]
            children = {k: p[k][split].detach().repeat(2, *([1] * (p[k].dim() - 1))) for k in p}
            children["means"] = (p["means"][split][None] + offsets).reshape(-1, 3)
            children["scales"] = torch.log(scales / 1.6).repeat(2, 1)
            model.append(children)
            model.remove(torch.cat([split, torch.zeros(len(children["means"]), dtype=torch.bool, device=dev)]))
        return parents

    def _unseen(self, state, step: int) -> torch.Tensor | None:
        """Before growing: which Gaussians no training view rendered since the last refinement showed. Not in
        the two refinements after an opacity reset: the reset caps every opacity, and so every weight, at
        2 prune_opa, and the Gaussians that matter need those steps to regain theirs."""
        if self.prune_weight <= 0 or state.get("views", 0) == 0:
            return None
        if step >= self.reset_every and step % self.reset_every <= 2 * self.refine_every:
            return None
        return state["max_weight"] < self.prune_weight

    def _prune(self, model, step: int, unseen: torch.Tensor | None = None) -> None:
        p = model.params
        prune = torch.sigmoid(p["opacities"]) < self.prune_opa
        if unseen is not None:  # listed first; the Gaussians grown since were cloned or split from seen ones
            prune[: len(unseen)] |= unseen
        if step > self.reset_every:
            prune |= torch.exp(p["scales"]).max(-1).values > self.prune_scale3d * model.scene_scale
        if prune.any() and not prune.all():
            model.remove(prune)
