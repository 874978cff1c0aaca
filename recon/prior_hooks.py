"""Wires ``sparsesplat.priors`` into training: ``--prior depth|repair|diffusion`` become extra losses of the
trainer (``Trainer(extra_losses=...)``), and each prior leaves its traces in ``<run>/priors/``:

    priors/depth/            cached prior depth per training image (.npy) and a picture of each (.png)
    priors/repair/           leave-one-out pairs (pairs.pt, pairs/*.png: render | photo), the repair network
                             (scene_repairer.pt) and its training loss (repair_loss.csv)
    priors/pseudo/r<k>/      per refresh k: each pseudo view's render | repaired image, cameras.json
    priors/losses.csv        every prior loss per step; priors/loss_curve.png plots them
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sparsesplat.priors.depth_losses import patch_normalized_depth_loss, pearson_depth_loss, ranking_depth_loss
from sparsesplat.priors.pseudo_views import PseudoViewConfig, PseudoViewScheduler, masked_target
from sparsesplat.priors.repair.scene import SceneRepairConfig
from sparsesplat.rasterizer import render

from .io import atomic_path
from .metrics import ssim, ssim_kernel

PRIORS = ("none", "depth", "repair", "diffusion")


@dataclass
class PriorSettings:
    """Weights and schedules of the priors (``--prior`` picks which run)."""

    depth_pearson: float = 0.05
    """Weight of the Pearson depth loss (FSGS)."""
    depth_ranking: float = 0.05
    """Weight of the local depth-ranking loss (SparseNeRF)."""
    depth_patch: float = 0.02
    """Weight of the patch-normalized depth loss (DNGaussian, local + 0.1 global)."""
    depth_start: float = 0.1
    """Depth losses start after this fraction of the steps."""
    loo_steps: int = 500
    """Steps of each leave-one-out run that makes the repair network's training pairs."""
    repair: SceneRepairConfig = field(default_factory=SceneRepairConfig)
    pseudo: PseudoViewConfig = field(default_factory=PseudoViewConfig)
    diffusion_timestep: int = 199
    """Noise level the diffusion model denoises from, 0-999 (higher: stronger repair, less faithful)."""
    diffusion_tile: int = 512
    """Renders larger than this many pixels a side are repaired in tiles of this size."""
    diffusion_reference: bool = True
    """Denoise each render beside its nearest training photo (Difix-style reference view)."""


def _png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")


def _depth_picture(d: torch.Tensor) -> np.ndarray:
    d = d[..., 0].float().cpu().numpy()
    lo, hi = np.percentile(d, 2), np.percentile(d, 98)
    g = 1 - np.clip((d - lo) / max(hi - lo, 1e-9), 0, 1)  # near = bright
    return np.repeat(g[..., None], 3, axis=2)


class LossLog:
    """Per-step values of the prior losses; written as CSV and a plot in the run folder."""

    def __init__(self):
        self.rows: dict[str, list[tuple[int, float]]] = {}

    def add(self, name: str, step: int, value: torch.Tensor) -> None:
        self.rows.setdefault(name, []).append((step, float(value.detach())))

    def write(self, folder: Path) -> None:
        if not self.rows:
            return
        lines = ["name,step,value"] + [f"{n},{s},{v:.6g}" for n, r in self.rows.items() for s, v in r]
        with atomic_path(folder / "losses.csv") as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # the plot is a convenience; the CSV has the numbers
            return
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, r in self.rows.items():
            s, v = np.array(r).T
            k = max(1, len(v) // 50)
            smooth = np.convolve(v, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1:], smooth, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (moving average)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        with atomic_path(folder / "loss_curve.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)


class DepthPriorLoss:
    """FSGS Pearson + SparseNeRF ranking + DNGaussian patch losses between the rendered depth of the training
    view and its monocular prior, where the render's alpha >= 0.5."""

    needs_depth = True

    def __init__(self, prior_depths: torch.Tensor, s: PriorSettings, iters: int, scene_scale: float, log: LossLog):
        self.prior, self.s, self.iters, self.scene_scale, self.log = prior_depths, s, iters, scene_scale, log
        self.generator = torch.Generator().manual_seed(1234)

    def losses(self, depth: torch.Tensor, alpha: torch.Tensor, prior: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = (alpha.detach() >= 0.5).to(depth.dtype)
        s, out = self.s, {}
        if s.depth_pearson > 0:
            out["depth_pearson"] = s.depth_pearson * pearson_depth_loss(depth, prior, mask)
        if s.depth_ranking > 0:
            out["depth_ranking"] = s.depth_ranking * ranking_depth_loss(
                depth, prior, mask, margin=1e-4 * self.scene_scale, generator=self.generator)
        if s.depth_patch > 0:
            out["depth_patch"] = s.depth_patch * patch_normalized_depth_loss(depth, prior, mask)
        return out

    def __call__(self, ctx) -> Optional[torch.Tensor]:
        if ctx.step < self.s.depth_start * self.iters or ctx.out.depths is None:
            return None
        parts = self.losses(ctx.out.depths[0], ctx.out.alphas[0], self.prior[ctx.view].to(ctx.out.depths))
        for name, value in parts.items():
            self.log.add(name, ctx.step, value)
        return sum(parts.values()) if parts else None


class Repairers:
    """The repairers that ``--prior`` selected, applied in turn (per-scene network first, then diffusion)."""

    def __init__(self, scene=None, diffusion=None):
        self.scene, self.diffusion = scene, diffusion
        self.name = "+".join(r.name for r in (scene, diffusion) if r is not None)
        self.seconds: list[float] = []

    def repair(self, render, references=None, cameras=None):
        t0 = time.perf_counter()
        for r in (self.scene, self.diffusion):
            if r is not None:
                render = r.repair(render, references, cameras)
        self.seconds.append(time.perf_counter() - t0)
        return render


class PseudoViewLoss:
    """Progressive refinement: refreshes the pseudo views on schedule and, with probability ``probability``
    per step, fits one of them (masked L1 + D-SSIM, weight ``weight``; plus the depth losses against the
    prior depth of the repaired image when a depth prior runs)."""

    def __init__(self, scheduler: PseudoViewScheduler, repairers: Repairers, iters: int, folder: Path,
                 log: LossLog, prepare=None, depth_prior=None, depth_loss: Optional[DepthPriorLoss] = None,
                 ssim_weight: float = 0.2, text_log=print):
        self.sched, self.repairers, self.iters, self.folder, self.log = scheduler, repairers, iters, folder, log
        self.prepare, self.depth_prior, self.depth_loss = prepare, depth_prior, depth_loss
        self.ssim_weight, self.text_log = ssim_weight, text_log
        self.generator = torch.Generator().manual_seed(4321)
        self.prior_depths: Optional[torch.Tensor] = None
        self.needs_depth = False
        self.refresh_seconds: list[float] = []
        self._last_refresh = -1

    def _refresh(self, ctx) -> None:
        t0 = time.perf_counter()
        if self.prepare is not None:
            self.prepare(ctx.trainer)
            self.prepare = None
        trainer = ctx.trainer
        g = trainer.model.activated()

        def render_fn(cams):
            cols, alps = [], []
            for i in range(len(cams)):
                o = render(g, cams[i], backend=trainer.cfg.backend, background=trainer.background,
                           sh_degree=ctx.sh_degree, render_mode="RGB")
                cols.append(o.colors[0].clamp(0, 1))
                alps.append(o.alphas[0])
            return torch.stack(cols), torch.stack(alps)

        with torch.no_grad():
            views = self.sched.refresh(render_fn, self.repairers.repair)
            if self.depth_prior is not None:
                self.prior_depths = self.depth_prior(views.images)
        self.refresh_seconds.append(time.perf_counter() - t0)
        self._save(views, ctx.step)
        left = float(self.sched.distance_to_targets().max())
        self.text_log(f"pseudo views: refresh {views.refreshes} at step {ctx.step}, {len(views.images)} views, "
                      f"{self.refresh_seconds[-1]:.1f} s, farthest {left:.2f} units from its target")

    def _save(self, views, step: int) -> None:
        from .export import save_side_by_side

        d = self.folder / f"r{views.refreshes:02d}"
        for i in range(len(views.images)):
            shown = views.images[i] * views.masks[i] + 0.25 * views.images[i] * (1 - views.masks[i])
            save_side_by_side(d / f"{i:03d}.png", views.renders[i].cpu().numpy(), shown.cpu().numpy())
        cams = {"step": step, "viewmats": views.cameras.viewmats.cpu().tolist(), "Ks": views.cameras.Ks.cpu().tolist(),
                "note": "left: render, right: repaired pseudo ground truth (dimmed where alpha < threshold)"}
        with atomic_path(d / "cameras.json") as tmp:
            tmp.write_text(json.dumps(cams) + "\n")

    def __call__(self, ctx) -> Optional[torch.Tensor]:
        if ctx.step != self._last_refresh and self.sched.due(ctx.step, self.iters):
            self._last_refresh = ctx.step
            self._refresh(ctx)
        k = self.sched.sample(self.generator)
        if k is None:
            return None
        views = self.sched.views
        want_depth = self.depth_loss is not None and self.prior_depths is not None
        out = render(ctx.prims, views.cameras[k], backend=ctx.trainer.cfg.backend, background=ctx.background,
                     sh_degree=ctx.sh_degree, render_mode="RGB+ED" if want_depth else "RGB",
                     rasterize_mode=ctx.trainer.cfg.rasterize_mode)
        img, mask = out.colors[0], views.masks[k]
        if mask.sum() < 1:
            return None
        target = masked_target(views.images[k], img, mask)
        l1 = (img - target).abs().sum() / (3 * mask.sum())
        d_ssim = 1 - ssim(img, target, kernel=ssim_kernel(out.meta.backend))
        loss = (1 - self.ssim_weight) * l1 + self.ssim_weight * d_ssim
        loss = self.sched.cfg.weight * loss
        self.log.add("pseudo_view", ctx.step, loss)
        if want_depth:
            parts = self.depth_loss.losses(out.depths[0], out.alphas[0] * mask, self.prior_depths[k])
            for name, value in parts.items():
                self.log.add(name + "_pseudo", ctx.step, value)
            loss = loss + self.sched.cfg.weight * sum(parts.values())
        return loss


@dataclass
class PriorHooks:
    """What ``build_prior_hooks`` made: the trainer's extra losses and what to write at the end."""

    losses: list = field(default_factory=list)
    log: LossLog = field(default_factory=LossLog)
    folder: Optional[Path] = None
    pseudo: Optional[PseudoViewLoss] = None
    setup_seconds: float = 0.0

    def finish(self) -> dict:
        """Write the loss curves; return a summary for metrics.json."""
        if self.folder is None:
            return {}
        self.log.write(self.folder)
        summary: dict = {"prior_setup_seconds": self.setup_seconds}
        if self.pseudo is not None and self.pseudo.refresh_seconds:
            summary["pseudo_refreshes"] = len(self.pseudo.refresh_seconds)
            summary["pseudo_refresh_seconds_mean"] = float(np.mean(self.pseudo.refresh_seconds))
            summary["repair_seconds_per_refresh_mean"] = float(np.mean(self.pseudo.repairers.seconds))
        return summary


def selected(prior) -> set[str]:
    chosen = set(prior) - {"none"}
    unknown = chosen - set(PRIORS)
    if unknown:
        raise ValueError(f"unknown --prior {sorted(unknown)}; choose from {', '.join(PRIORS)}")
    return chosen


def build_prior_hooks(cfg, model_cls, points, colors, scene_scale: float, images: torch.Tensor, cameras,
                      background: torch.Tensor, device: torch.device, out: Path, log=print) -> PriorHooks:
    """Load or train what ``cfg.prior`` asks for and return the trainer's extra losses.

    cfg: the ReconstructConfig; images/cameras: the training views (normalized frame) on ``device``.
    Models are loaded before any long work, so a missing model fails at once.
    """
    chosen = selected(cfg.prior)
    if not chosen:
        return PriorHooks()
    t_setup = time.time()
    s: PriorSettings = cfg.priors
    folder = out / "priors"
    hooks = PriorHooks(folder=folder)
    iters = cfg.train.iters
    depth_prior = diffusion = None
    if "depth" in chosen:
        from sparsesplat.priors.depth import TransformersDepthPrior

        depth_prior = TransformersDepthPrior(cfg.depth_model, device=device, cache_dir=folder / "depth")
    if "diffusion" in chosen:
        from sparsesplat.priors.repair import DiffusionRepairer

        diffusion = DiffusionRepairer(cfg.diffusion_model, device=device, timestep=s.diffusion_timestep,
                                      tile=s.diffusion_tile, use_reference=s.diffusion_reference, seed=cfg.train.seed)
    depth_loss = None
    if depth_prior is not None:
        names = [f"train{i:03d}" for i in range(len(images))]
        prior_depths = depth_prior(images, names=names)
        for i, name in enumerate(names):
            _png(folder / "depth" / f"{name}.png", np.concatenate(
                [images[i].cpu().numpy(), _depth_picture(prior_depths[i])], axis=1))
        depth_loss = DepthPriorLoss(prior_depths, s, iters, scene_scale, hooks.log)
        hooks.losses.append(depth_loss)
        log(f"depth prior: {cfg.depth_model} on {len(images)} views")
    if not ({"repair", "diffusion"} & chosen):
        hooks.setup_seconds = time.time() - t_setup
        return hooks

    scene_rep = prepare = None
    if "repair" in chosen:
        scene_rep, prepare = _scene_repairer(cfg, model_cls, points, colors, scene_scale, images, cameras,
                                             background, device, folder / "repair", log)
    repairers = Repairers(scene_rep, diffusion)
    sched = PseudoViewScheduler(cameras, images, s.pseudo)
    hooks.pseudo = PseudoViewLoss(sched, repairers, iters, folder / "pseudo", hooks.log, prepare=prepare,
                                  depth_prior=depth_prior, depth_loss=depth_loss, ssim_weight=cfg.train.ssim_weight,
                                  text_log=log)
    hooks.losses.append(hooks.pseudo)
    log(f"pseudo views: {len(sched.targets)} targets, refresh every {s.pseudo.every(iters)} steps from step "
        f"{int(s.pseudo.start * iters)}, repaired by {repairers.name}")
    hooks.setup_seconds = time.time() - t_setup
    return hooks


def _scene_repairer(cfg, model_cls, points, colors, scene_scale, images, cameras, background, device, folder, log):
    """The per-scene repairer and the function that trains it at the first refresh (leave-one-out pairs made
    now, perturbed-primitive pairs from the main model then)."""
    from sparsesplat.priors.repair import SceneRepairer

    from .repair_pairs import cached_pairs, leave_one_out_pairs, perturbed_pairs, short_schedule
    from .trainer import Trainer

    s: PriorSettings = cfg.priors
    rep = SceneRepairer(s.repair, device=device)
    if (folder / "scene_repairer.pt").exists() and cfg.resume:
        return SceneRepairer.load(folder / "scene_repairer.pt", device=device), None

    loo = (torch.empty(0), torch.empty(0))
    if len(images) >= 2 and s.loo_steps > 0:
        def make_trainer(imgs, cams, seed):
            short = short_schedule(cfg.train, s.loo_steps)
            short.seed = cfg.train.seed + seed
            model = model_cls.create(points, colors, short, scene_scale, device=device)
            return Trainer(model, imgs, cams, background, short)

        t0 = time.time()
        loo = cached_pairs(folder / "pairs.pt", lambda: leave_one_out_pairs(
            make_trainer, images, cameras, background, s.loo_steps, log=log))
        log(f"repair prior: {len(loo[0])} leave-one-out pairs in {time.time() - t0:.0f} s")
        for i in range(len(loo[0])):
            _png(folder / "pairs" / f"loo_{i:03d}.png", np.concatenate([loo[0][i].numpy(), loo[1][i].numpy()], axis=1))

    def prepare(trainer) -> None:
        t0 = time.time()
        pd, pc = perturbed_pairs(trainer.model, trainer.images, trainer.cameras, trainer.background,
                                 trainer.cfg.backend, seed=cfg.train.seed)
        degraded = torch.cat([loo[0], pd]) if len(loo[0]) else pd
        clean = torch.cat([loo[1], pc]) if len(loo[1]) else pc
        # leave-one-out pairs carry the novel-view failure modes: draw them as often as all the others
        w = torch.cat([torch.full((len(loo[0]),), max(1.0, len(pd) / max(len(loo[0]), 1))), torch.ones(len(pd))])
        history = rep.fit(degraded, clean, weights=w)
        rep.save(folder / "scene_repairer.pt")
        with atomic_path(folder / "repair_loss.csv") as tmp:
            tmp.write_text("step,l1\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(history)))
        before = float((degraded - clean).abs().mean())
        after = float((rep.repair(degraded.to(device)).cpu() - clean).abs().mean())
        log(f"repair prior: network trained on {len(degraded)} pairs in {time.time() - t0:.0f} s "
            f"(L1 on its pairs {before:.4f} -> {after:.4f})")

    return rep, prepare


__all__ = ["PRIORS", "PriorHooks", "PriorSettings", "build_prior_hooks"]
