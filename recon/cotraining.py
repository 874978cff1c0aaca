"""Two fields trained side by side, each judged by the other (CoR-GS, Zhang et al. 2024).

Two radiance fields trained from the same points on the same photos differ only by the randomness of
densification, view order and dropout. Where the photos pin the scene down they agree; where they do not
(a primitive that could sit anywhere along its training rays, a floater over a textureless table) each field
puts it somewhere else. CoR-GS turns that disagreement, which needs no ground truth, into two terms:

- co-pruning: every ``coprune_every`` steps, a primitive of one field with no primitive of the other within
  ``coprune_distance`` (a fraction of the scene scale) is removed;
- pseudo-view co-regularization: each step both fields render one random camera near the training cameras,
  and each is pulled towards the other's render (L1 + D-SSIM against the other's detached image).

Field 0 is the result; field 1 exists to judge it. Each step costs about 2.5 times a single field's.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras, render
from sparsesplat.rasterizer.cameras import look_at

from .metrics import ssim, ssim_kernel
from .trainer import StepContext, StepStats, Trainer, TrainConfig, run_steps


def mean_pose(cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """The cameras' mean centre (3,) and a camera-to-world rotation (3,3) whose viewing axis and up are the
    cameras' mean ones (OpenCV axes: x right, y down, z forward)."""
    c2w = cams.camtoworlds.detach().to(torch.float64)
    forward = torch.nn.functional.normalize(c2w[:, :3, 2].mean(0), dim=0)
    down = c2w[:, :3, 1].mean(0)
    down = torch.nn.functional.normalize(down - (down @ forward) * forward, dim=0)
    right = torch.linalg.cross(down, forward)
    return c2w[:, :3, 3].mean(0), torch.stack([right, down, forward], dim=1)


def random_pseudo_camera(cams: Cameras, focus_depth: float, generator: torch.Generator) -> Cameras:
    """One camera placed uniformly in the box the training cameras span (in the frame of their mean pose),
    looking at the point ``focus_depth`` ahead of the mean camera, with the cameras' mean up; intrinsics and
    size of the first camera (CoR-GS's pseudo views for forward-facing and object captures)."""
    centre, R = mean_pose(cams)
    local = (cams.camtoworlds.detach().to(torch.float64)[:, :3, 3] - centre) @ R  # positions in the mean frame
    extent = local.abs().amax(0)
    u = torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1
    position = centre + R @ (extent * u)
    viewmat = look_at(position, centre + focus_depth * R[:, 2], up=-R[:, 1])
    return Cameras(viewmat[None].to(cams.viewmats.dtype), cams.Ks[:1].detach().clone(), cams.width, cams.height)


def focus_depth(cams: Cameras, points: torch.Tensor) -> float:
    """Median depth of the points in front of the cameras' mean pose (the distance CoR-GS's pseudo views
    look at); the mean camera-to-points distance when none is in front."""
    centre, R = mean_pose(cams)
    depth = (points.detach().to(torch.float64) - centre) @ R[:, 2]
    ahead = depth[depth > 0]
    if len(ahead):
        return float(ahead.median())
    return float((points.detach().to(torch.float64) - centre).norm(dim=1).mean())


def unmatched(points: torch.Tensor, others: torch.Tensor, distance: float) -> torch.Tensor:
    """(N,) bool: the points with no point of ``others`` within ``distance``."""
    from scipy.spatial import cKDTree

    if len(others) == 0:
        return torch.ones(len(points), dtype=torch.bool, device=points.device)
    d, _ = cKDTree(others.detach().cpu().double().numpy()).query(points.detach().cpu().double().numpy(), k=1,
                                                                 distance_upper_bound=distance)
    return torch.from_numpy(~np.isfinite(d)).to(points.device)


class _FollowerHook:
    """Field 1's view of field 0's pose refinement: the same corrected cameras (its gradients reach the same
    pose parameters), stepped once per step by field 0."""

    def __init__(self, leader):
        self.leader = leader

    def camera(self, cams, v):
        return self.leader.camera(cams, v)

    def step(self):
        return None


class CoTrainer:
    """Drives two ``Trainer``s in lockstep with CoR-GS's co-pruning and co-regularization. Offers the parts of
    the ``Trainer`` interface the pipeline uses; ``model``, ``appearance`` and the statistics are field 0's."""

    def __init__(self, trainers: list[Trainer], cfg: TrainConfig):
        if len(trainers) != 2:
            raise ValueError(f"co-training takes two fields, got {len(trainers)}")
        self.trainers, self.cfg = trainers, cfg
        self.generator = torch.Generator().manual_seed(cfg.seed + 7919)
        self.pruned = [0, 0]
        self._pseudo: Optional[Cameras] = None
        self._cached: Optional[torch.Tensor] = None  # field 0's render of this step's pseudo view, detached
        self._focus = focus_depth(trainers[0].cameras, _centers(trainers[0].model))
        for i, t in enumerate(trainers):
            t.extra_losses.append(self._coreg_loss(i))

    # the Trainer interface the pipeline uses
    @property
    def step(self) -> int:
        return self.trainers[0].step

    @property
    def model(self):
        return self.trainers[0].model

    @property
    def appearance(self):
        return self.trainers[0].appearance

    @property
    def camera_hook(self):
        return self.trainers[0].camera_hook

    @camera_hook.setter
    def camera_hook(self, hook) -> None:
        self.trainers[0].camera_hook = hook
        self.trainers[1].camera_hook = None if hook is None else _FollowerHook(hook)

    @property
    def nonfinite_events(self) -> int:
        return sum(t.nonfinite_events for t in self.trainers)

    def state_dict(self) -> dict:
        return {"fields": [t.state_dict() for t in self.trainers], "generator": self.generator.get_state(),
                "pruned": list(self.pruned)}

    def load_state_dict(self, state: dict) -> None:
        if "fields" not in state:
            raise ValueError("this checkpoint holds one field; resume it without --fields 2")
        for t, s in zip(self.trainers, state["fields"]):
            t.load_state_dict(s)
        self.generator.set_state(state["generator"])
        self.pruned = list(state["pruned"])

    # -- the two terms --------------------------------------------------------------------------------------

    def _coreg_active(self, step: int) -> bool:
        return self.cfg.coreg_weight > 0 and step >= self.cfg.coreg_start * self.cfg.iters

    def _coreg_loss(self, i: int) -> Callable[[StepContext], Optional[torch.Tensor]]:
        def loss(ctx: StepContext) -> Optional[torch.Tensor]:
            if self._pseudo is None:
                return None
            me = ctx.trainer
            out = render(ctx.prims, self._pseudo, backend=me.cfg.backend, background=me.background,
                         sh_degree=ctx.sh_degree, render_mode="RGB", rasterize_mode=me.cfg.rasterize_mode)
            mine = out.colors[0]
            if i == 0:
                other = self.trainers[1]
                with torch.no_grad():
                    theirs = render(other.model.activated(), self._pseudo, backend=other.cfg.backend,
                                    background=other.background, sh_degree=ctx.sh_degree, render_mode="RGB",
                                    rasterize_mode=other.cfg.rasterize_mode).colors[0]
                self._cached = mine.detach()
            else:  # field 0's render from before its update, as CoR-GS compares both fields at one moment
                theirs = self._cached
            w = self.cfg.ssim_weight
            photometric = (1 - w) * (mine - theirs).abs().mean() + w * (1 - ssim(mine, theirs, kernel=ssim_kernel(out.meta.backend)))
            return self.cfg.coreg_weight * photometric
        return loss

    def coprune(self) -> list[int]:
        """Remove each field's primitives that have no counterpart in the other field; returns the counts."""
        distance = self.cfg.coprune_distance * self.model.scene_scale
        centers = [_centers(t.model) for t in self.trainers]
        drop = [unmatched(centers[0], centers[1], distance), unmatched(centers[1], centers[0], distance)]
        counts = []
        for t, mask in zip(self.trainers, drop):
            if mask.all():  # never empty a field: the other has drifted away entirely, nothing to judge by
                mask = torch.zeros_like(mask)
            t.remove_primitives(mask)
            counts.append(int(mask.sum()))
        return counts

    # -- the loop -------------------------------------------------------------------------------------------

    def train_step(self) -> StepStats:
        step = self.step
        self._pseudo = (random_pseudo_camera(self.trainers[0].cameras, self._focus, self.generator)
                        if self._coreg_active(step) else None)
        stats = self.trainers[0].train_step()
        self.trainers[1].train_step()
        self._pseudo = self._cached = None
        every = self.cfg.coprune_every
        if every and self.step % every == 0 and self.step > max(every, _refine_start(self.trainers[0])):
            for k, n in enumerate(self.coprune()):
                self.pruned[k] += n
        return dataclasses.replace(stats, num_primitives=len(self.model))

    def train(self, on_step: Optional[Callable[[StepStats], None]] = None,
              on_checkpoint: Optional[Callable[["CoTrainer"], None]] = None,
              should_stop: Callable[[], bool] = lambda: False) -> None:
        """Run until ``cfg.iters`` steps; calls ``on_checkpoint`` every ``checkpoint_every`` steps."""
        run_steps(self, on_step, on_checkpoint, should_stop)


def _refine_start(trainer: Trainer) -> int:
    return int(getattr(trainer.strategy, "refine_start_iter", 0))


def second_field_config(cfg: TrainConfig) -> TrainConfig:
    """Field 1's settings: field 0's with another seed, so its view order, dropout and splits differ."""
    return dataclasses.replace(cfg, seed=cfg.seed + 1)


def _centers(model) -> torch.Tensor:
    """(N,3) centres of a field's primitives, any kind (a Gaussian's mean, a triangle's or convex's centroid)."""
    with torch.no_grad():
        return model.activated().centers.detach()
