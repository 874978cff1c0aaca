"""The training loop: one view per step, L = (1 - l) L1 + l D-SSIM, a densification strategy, sparse-view
regularizers, an SH degree ramp, checkpoints, and a guard against NaN/Inf.

The trainer knows the strategy only through its interface (``recon/strategies``), and the rasterizer only
through ``render()``.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import torch

from sparsesplat.rasterizer import Cameras, render
from sparsesplat.rasterizer.primitives import all_finite
from sparsesplat.rasterizer.profiling import stage

from .appearance import PhotoAppearance
from .kinds.convex import ConvexSettings
from .kinds.gaussian import LearningRates
from .kinds.ges import GesOptions
from .kinds.triangle import TriangleOptions
from .metrics import psnr, ssim, ssim_kernel
from .patches import area_resize
from .primitive_model import INIT_OPACITY, PrimitiveModel
from .regularizers import (backdrop_weights, background_alpha_loss, depth_smoothness_loss,
                           drop_primitives, inconsistency, multiview_photo_loss, shifted_camera, stereo_depth_loss,
                           textureless, warp_from_shifted)
from .strategies import DefaultStrategy, MCMCStrategy
from .transients import transient_inliers


@dataclass
class TrainConfig:
    """How a scene is optimized. Defaults suit a CPU run of a few thousand steps on a sparse-view scene."""

    iters: int = 3000
    """Training steps."""
    views_per_step: int = 1
    """Training views rendered each step; their losses are averaged into one step (with --nproc N, split over the
    N processes: a multiple of N)."""
    sh_degree: int = 3
    """Highest spherical-harmonics degree; raised one degree every ``sh_every`` steps."""
    sh_every: int = 500
    """Raise the spherical-harmonics degree by one every this many steps."""
    ssim_weight: float = 0.2
    """Weight of D-SSIM in the photometric loss (3DGS: 0.2)."""
    strategy: Literal["default", "mcmc", "convex"] = "default"
    """Densification: for Gaussians and GES, default (3DGS adaptive density control) or mcmc (MCMC with a cap);
    triangles and convexes have their own (default; convex names the convexes' too)."""
    default: DefaultStrategy = field(default_factory=lambda: DefaultStrategy(
        refine_start_iter=300, refine_stop_iter=2000, refine_every=100, reset_every=100_000, prune_weight=0.01,
        grow_grad2d=0.0004))
    mcmc: MCMCStrategy = field(default_factory=lambda: MCMCStrategy(
        cap_max=200_000, refine_start_iter=300, refine_stop_iter=2500, refine_every=100))
    lrs: LearningRates = field(default_factory=LearningRates)
    """Gaussian learning rates."""
    triangle: TriangleOptions = field(default_factory=TriangleOptions)
    """Triangle learning rates, initialization and strategy (--primitive triangle)."""
    convex: ConvexSettings = field(default_factory=ConvexSettings)
    """Convexes (--primitive convex): initialization, learning rates and their densification."""
    ges: GesOptions = field(default_factory=GesOptions)
    """GES splats (--primitive ges): the shapes' learning rate and start (their Gaussian parameters use lrs)."""
    init_opacity: float = INIT_OPACITY
    """Opacity of every primitive at the start."""
    dropout: float = 0.2
    """DropGaussian: the fraction of primitives dropped per step rises linearly to this (0 disables)."""
    binocular_weight: float = 0.3
    """Binocular consistency: weight of the loss between a training photo and the render of a shifted camera
    warped back with the rendered depth (0 disables). Default by measurement, with opacity_decay 0.002:
    +0.89 dB on fern llff3 (19.95 vs 19.06) and +0.85 dB on lego blender8 (22.16 vs 21.31), 3000 steps; with
    today's other defaults +1.98 dB on lego (24.56 vs 22.58) and +1.58 dB masked on DTU scan37 (13.92 vs 12.34),
    seed 0; 0.6 gained nothing (benchmarks/results/quality.md)."""
    binocular_baseline: float = 0.4
    """Largest shift of the virtual camera, as a fraction of the scene scale (each shift is drawn between half
    and all of it). 0.4 by measurement against 0.2, 3000 steps: lego blender8 24.62 vs 24.54 and DTU scan37
    masked 14.59 vs 13.80 (3-seed means), fern llff3 22.51 vs 22.40 (seed 0); 0.6 did worse on lego (24.30,
    seed 0) (benchmarks/results/quality.md)."""
    binocular_directions: Literal["sideways", "any"] = "any"
    """Which way the virtual camera moves in its image plane: "sideways" (along its x axis, left or right, as
    Binocular3DGS's stereo pair) or "any" (a direction drawn uniformly each time, so rows are constrained too).
    "any" by measurement, with baseline 0.4: lego blender8 25.18 / 25.08 vs 24.58 / 24.57 (seeds 0 / 1), DTU scan37
    masked 15.60 vs 14.66, fern llff3 22.47 vs 22.51 (seed 0) (benchmarks/results/quality.md)."""
    binocular_start: float = 0.2
    """Start binocular consistency after this fraction of the steps (depth is meaningless at first)."""
    binocular_resolution: float = 1.0
    """Render the shifted camera, and compare its warp with the photo, at this fraction of the training views'
    resolution (0.5: a quarter of the pixels; the depth and the photo are area-averaged to that size). 0.5 saves
    11% of a fern step and costs lego 0.45 dB (benchmarks/results/cpu_binocular.md, quality.md)."""
    opacity_decay: float = 0.002
    """Multiply opacities by (1 - opacity_decay) every step while densifying (0 disables)."""
    stereo_depth_weight: float = 0.0
    """Weight of the loss between the rendered depth of a training view and its plane-sweep stereo depth
    (where the stereo passed its cross-view checks; --init auto/mvs), relative error |d - d_mvs| / d_mvs. Off by
    default: measured on DTU scan37 dtu3 (masked test PSNR at 1000 / 2000 steps: 12.38 / 12.37 with weight 0.2,
    12.66 / 12.84 without) and on the CI arc scene (18.25 vs 18.55 dB), it did not help."""
    anisotropy_weight: float = 0.01
    """Weight of the loss on primitives longer than ``max_anisotropy`` times their width (Gaussians: log of the
    excess scale ratio). Few views leave a primitive's depth extent free, so it grows into a needle seen
    end-on by the training views and as a streak from anywhere else (0 disables)."""
    max_anisotropy: float = 10.0
    """Largest ratio of a primitive's longest to shortest extent that costs nothing."""
    background_alpha_weight: float = 0.1
    """Weight of the loss that keeps pixels showing the background colour transparent (alpha towards 0 where
    the photo is within ``background_tolerance`` of the render background): a scan's black backdrop or a
    Blender scene's white needs no primitives, and primitives made to paint it hover over the object in
    other views (0 disables)."""
    background_tolerance: float = 0.1
    """Largest per-channel difference from the background colour a photo pixel may have to count as background."""
    depth_smoothness_weight: float = 5.0
    """Weight of the edge-aware smoothness of each training view's rendered depth (relative to its mean depth;
    depth may jump where the photo has an edge), where ``depth_smoothness_gate`` lets it act. Few views leave each
    primitive's depth along its training rays free; the scatter shows from other viewpoints as a shattered
    surface (0 disables). Default 5 with the texture gate (3000 steps, three seeds each, against 0): DTU scan37 dtu3
    masked PSNR 15.70 -> 16.28, fern llff3 22.78 -> 23.04, lego blender8 25.10 -> 25.12
    (benchmarks/results/quality.md, twelfth session). Ungated (edges only) it costs the others: at 20, DTU 12.19 ->
    15.48 but fern 22.38 -> 20.55 and lego 24.39 -> 22.13 (dtu_depth_smoothness.md, older defaults)."""
    multiview_weight: float = 0.0
    """Weight of the photo-consistency of each training view's rendered depth with the other training photos
    (each nearby photo warped in through the depth, compared by patch NCC, best photo per pixel; textured
    pixels only): the multi-view stereo score of the depth, so primitives sit where the photos agree (0 disables).
    Off by default: on DTU scan37 dtu3 its depth gradients also drive densification (200k+ primitives by step
    1350 at 0.2) and at 0.05 it cost 0.45 dB masked (benchmarks/results/dtu_levers.md)."""
    multiview_start: float = 0.2
    """Start the multi-view photo-consistency after this fraction of the steps."""
    multiview_sources: int = 2
    """Nearby training photos (optical axes within 60 degrees, nearest first) compared with each view."""
    multiview_window: int = 7
    """Side of the NCC patch, pixels (odd)."""
    depth_smoothness_edge: float = 10.0
    """How fast a photo edge frees the depth smoothness: weight exp(-edge * |colour difference|)."""
    depth_smoothness_order: int = 1
    """1: first differences (flat surfaces are free), 2: second differences (any plane is free)."""
    depth_smoothness_gate: Literal["edges", "photos", "texture"] = "texture"
    """edges: smooth wherever the photo has no edge; photos: also only as far as the other training photos
    contradict the depth or cannot tell it (the multi-view NCC of ``multiview_*``: 0 where they confirm it).
    Measured at weight 20: DTU scan37 masked 15.95 over two seeds (ungated 15.82), lego 22.22 (22.13), fern
    20.52 (20.55): no better than edges alone (benchmarks/results/dtu_levers.md; then the gated steps were
    normalized by their gated weights, which raised the others' weight, now by their ungated ones). texture:
    also only where the photo is textureless (``regularizers.textureless`` with ``depth_smoothness_texture``),
    where the photos cannot place the surface (a white table, a bare wall): the default. Measured at weight 20
    (3000 steps, seeds 0 / 1, densification threshold 0.0002; at 0.0004 DTU gives 16.47 / 16.16): DTU scan37
    masked 15.60 / 15.50 -> 16.11 / 16.04 (full frame 13.34 / 13.07 -> 14.62 / 13.74; the white table's
    primitives no longer hang over the object), lego 25.18 / 25.08 -> 25.06 / 25.12, but fern 22.47 -> 22.14
    (seed 0); at weight 5 (the default) fern gains instead (benchmarks/results/quality.md)."""
    depth_smoothness_texture: float = 0.02
    """texture gate: the local colour step at which a pixel counts as textured (smoothness weight exp(-step / this))."""
    depth_smoothness_until: float = 1.0
    """Apply the depth smoothness for this fraction of the steps only (a coherent surface first, details after)."""
    appearance: Literal["auto", "none", "affine"] = "auto"
    """Per-photo appearance (photos whose exposure or white balance differ): affine, a 3x3 colour matrix and
    offset per training photo applied to its render before the loss, pulled towards the identity; exports,
    the viewer and test views use the neutral look (recon/appearance.py). auto: affine for a folder of photos,
    none for the posed datasets (their photos share one look). Measured on a synthetic scene whose training
    photos differ in exposure and white balance: held-out PSNR 22.9 -> 25.1 dB; unaltered: 26.0 -> 26.1 dB."""
    appearance_weight: float = 0.01
    """Weight of the pull of each photo's colour transform towards the identity."""
    appearance_lr: float = 0.002
    """Adam learning rate of the per-photo colour transforms."""
    transients: Literal["none", "robust"] = "none"
    """Things that move between photos (people, cars, shadows): robust leaves out of the loss the regions whose
    error stands out from the rest of the photo (recon/transients.py). Off by default: on a synthetic scene
    with a moving occluder in half the training photos it gains 0.9 dB (with appearance), on one without it
    costs 0.3-0.5 dB."""
    transient_start: float = 0.2
    """Start leaving transient regions out after this fraction of the steps (the error means nothing before)."""
    fields: Literal[1, 2] = 1
    """Train two fields side by side, each judged by the other (CoR-GS): primitives the other field does not
    confirm are pruned, and renders of random nearby views are pulled together. About 3x the time per step.
    Measured (fast schedule): lego blender8 24.50 -> 25.23 dB (seed 0), DTU scan37 dtu3 masked 13.63 -> 14.46 (two
    seeds) (benchmarks/results/dtu_levers.md)."""
    coprune_every: int = 500
    """With two fields: prune each field's unconfirmed primitives every this many steps (0: never)."""
    coprune_distance: float = 0.1
    """With two fields: a primitive is confirmed by one of the other field within this distance (a fraction of
    the scene scale)."""
    coreg_weight: float = 1.0
    """With two fields: weight of the agreement of their renders of a random view near the training cameras."""
    coreg_start: float = 0.2
    """With two fields: start the render agreement after this fraction of the steps."""
    random_background: Literal["auto", "on", "off"] = "auto"
    """Composite each training render on a random colour, so every pixel a photo shows must be drawn opaque: a
    faint primitive over the background colour can no longer pass for a dark pixel. With masks (Blender alpha)
    the photo outside its mask gets the same colour, so the scene learns to draw nothing there; without, the
    backdrop does (pixels within ``background_tolerance`` of the background colour, in regions that reach the
    photo's border). auto: on unless per-photo appearance is on. Measured (fast schedule, seed 0 / 1): DTU scan37
    masked 12.19 / 11.85 -> 13.41 / 13.85 dB, lego 24.39 / 24.49 -> 24.50 / 24.40, fern 22.38 -> 22.39. With
    per-photo appearance on a synthetic scene of varied exposures it left the fitted looks as they were (26.1 against
    26.2 dB) but moved the neutral colours 1 dB away from the truth (24.2 against 25.1), hence off there."""
    backend: str = "auto"
    """Rasterizer: auto (cuda on a GPU, else the compiled cpu one, else torch), cpu, cuda, torch or gsplat."""
    rasterize_mode: Literal["classic", "antialiased"] = "classic"
    """classic, or antialiased (Mip-Splatting's 2D filter: fewer artifacts when zooming out)."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps (0: only at the end)."""
    seed: int = 0
    """Random seed (initialization, view order, dropout): the same seed repeats a run."""

    def uses_random_background(self) -> bool:
        """``random_background`` resolved: auto is on unless per-photo appearance is on."""
        return self.random_background == "on" or (self.random_background == "auto" and self.appearance != "affine")


@dataclass
class StepContext:
    """What an extra loss sees of one training step (``Trainer(extra_losses=...)``)."""

    trainer: "Trainer"
    step: int
    view: int
    camera: Cameras
    prims: object
    """The activated primitives rendered this step (after dropout); gradients flow to the model."""
    out: object
    """The ``RenderOutput`` of the training view (``depths`` set when an extra loss ``needs_depth``)."""
    gt: torch.Tensor
    background: torch.Tensor
    sh_degree: int


ExtraLoss = Callable[[StepContext], Optional[torch.Tensor]]
"""A loss added to the photometric loss each step (None: nothing this step). An optional attribute
``needs_depth = True`` asks the trainer to render the expected depth of the training view."""


@dataclass
class StepStats:
    step: int
    loss: float
    psnr: float
    num_primitives: int
    seconds: float


class NonFiniteError(RuntimeError):
    """Training kept producing NaN/Inf even after rolling back and lowering the learning rates."""


def merge_metas(metas: list, data_parallel=None):
    """One ``RenderMeta`` of a step's views (C = all of them, in view-slot order), as a batched render gives the
    densification strategies; with data-parallel training, every process's views gathered. Each view's
    ``means2d.grad`` is that of its share (1/C) of the step's mean loss, as in a batched render."""
    from sparsesplat.rasterizer.render import RenderMeta

    def cat(name: str, grad: bool = False) -> Optional[torch.Tensor]:
        parts = [(m.means2d.grad if m.means2d.grad is not None else torch.zeros_like(m.means2d)) if grad
                 else getattr(m, name) for m in metas]
        if parts[0] is None:
            return None
        t = torch.cat([p.detach() for p in parts])
        if data_parallel is not None:
            t = data_parallel.gather(t.to(torch.uint8) if t.dtype == torch.bool else t)
            t = t.bool() if parts[0].dtype == torch.bool else t
        return t

    first = metas[0]
    means2d = cat("means2d")
    has_grad = data_parallel is not None or any(m.means2d.grad is not None for m in metas)  # every rank gathers
    means2d.grad = cat("means2d", grad=True) if has_grad else None
    return RenderMeta(means2d=means2d, radii=cat("radii"), visibility=cat("visibility"), max_weight=cat("max_weight"),
                      depths=cat("depths"), width=first.width, height=first.height, backend=first.backend,
                      normals=cat("normals"))


def run_steps(driver, on_step, on_checkpoint, should_stop) -> None:
    """The training loop of a ``Trainer`` or ``CoTrainer``: steps until ``cfg.iters``, calling ``on_step``
    after each and ``on_checkpoint`` every ``checkpoint_every`` steps."""
    while driver.step < driver.cfg.iters and not should_stop():
        stats = driver.train_step()
        if on_step:
            on_step(stats)
        every = driver.cfg.checkpoint_every
        if on_checkpoint and every and driver.step % every == 0 and driver.step < driver.cfg.iters:
            on_checkpoint(driver)


class Trainer:
    """Optimizes a ``PrimitiveModel`` (any primitive kind) on posed training images.

    images: (V,H,W,3) float32 in [0,1]; cameras: ``Cameras`` of V views (normalized frame); background (3,).
    """

    def __init__(self, model: PrimitiveModel, images: torch.Tensor, cameras: Cameras, background: torch.Tensor,
                 cfg: TrainConfig, masks: Optional[torch.Tensor] = None, extra_losses: Sequence[ExtraLoss] = (),
                 depth_targets: Optional[torch.Tensor] = None, loss_masks: Optional[torch.Tensor] = None):
        """depth_targets: (V,H,W,1) depth per training view in the cameras' (normalized) units, 0 = unknown
        (the stereo initializer's depth maps); used with ``cfg.stereo_depth_weight``. loss_masks: (V,H,W,1),
        0 where a photo's pixels are left out of the loss (a user's masks/ folder)."""
        self.model, self.images, self.cameras, self.cfg = model, images, cameras, cfg
        self.depth_targets = depth_targets if depth_targets is not None and bool((depth_targets > 0).any()) else None
        self.extra_losses = list(extra_losses)
        self.background = torch.as_tensor(background, dtype=torch.float32)
        self.masks = masks
        self.loss_masks = loss_masks
        self.appearance = (PhotoAppearance(len(images), cfg.appearance_lr, device=images.device)
                           if cfg.appearance == "affine" else None)
        self.strategy = model.make_strategy(cfg)
        self.strategy_state = self.strategy.initialize_state(model)
        self.step = 0
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._order: list[int] = []
        self._good: Optional[dict] = None
        self.nonfinite_events = 0
        # optional pose refinement (recon.poses.refine.PoseRefiner): camera(cams, v) -> corrected view, step()
        self.camera_hook = None
        # data-parallel training (recon.distributed.DataParallel): this process renders its share of each step
        self.data_parallel = None
        self.random_bg = cfg.uses_random_background()
        tolerance = cfg.background_tolerance
        self._backdrop = (torch.stack([backdrop_weights(im, self.background, tolerance) for im in images])
                          if self.random_bg and masks is None else None)
        self._texture_gates = ([textureless(im, cfg.depth_smoothness_texture) for im in images]
                               if cfg.depth_smoothness_weight > 0 and cfg.depth_smoothness_gate == "texture" else None)
        self._mv_sources = (self._multiview_sources()
                            if cfg.multiview_weight > 0 or cfg.depth_smoothness_gate == "photos" else None)

    # -- one step -----------------------------------------------------------------------------------------

    def _next_view(self) -> int:
        if not self._order:
            self._order = torch.randperm(len(self.images), generator=self.generator).tolist()
        return self._order.pop()

    def _dropout_rate(self) -> float:
        return self.cfg.dropout * min(1.0, self.step / max(1, self.cfg.iters))

    def _binocular_active(self) -> bool:
        return self.cfg.binocular_weight > 0 and self.step >= self.cfg.binocular_start * self.cfg.iters

    def _loss_weights(self, img: torch.Tensor, gt: torch.Tensor, v: int) -> Optional[torch.Tensor]:
        """(H,W,1) 0/1 weights of the photometric loss: the user's loss mask times the robust transient weights
        (once they start); None when every pixel counts."""
        keep = self.loss_masks[v] if self.loss_masks is not None else None
        if self.cfg.transients == "robust" and self.step >= self.cfg.transient_start * self.cfg.iters:
            inliers = transient_inliers(img.detach(), gt, keep)
            keep = inliers if keep is None else keep * inliers
        return keep

    def _multiview_sources(self) -> list[list[int]]:
        from .init_mvs import MVSConfig, choose_sources

        V = self.cameras.viewmats.detach().cpu().double().numpy()
        pick = MVSConfig(sources=self.cfg.multiview_sources)
        return [choose_sources(V, v, pick) for v in range(len(self.images))]

    def _multiview_loss(self, cam, depth, alpha, gt, v: int) -> torch.Tensor:
        return multiview_photo_loss(depth, alpha, gt, self._sources_of(cam, v), self.cfg.multiview_window)

    def _smoothness_gate(self, cam, depth, gt, v: int):
        """The ``free`` map of view v's depth smoothness for the chosen gate (None: edges only)."""
        gate = self.cfg.depth_smoothness_gate
        if gate == "photos":
            return inconsistency(depth, gt, self._sources_of(cam, v), self.cfg.multiview_window)
        if gate == "texture":
            return self._texture_gates[v]
        return None

    def _sources_of(self, cam, v: int) -> list:
        sources = []
        for s in self._mv_sources[v]:
            other = self.cameras[s] if self.camera_hook is None else self.camera_hook.camera(self.cameras, s)
            sources.append((self.images[s], cam.Ks[0], cam.viewmats[0], other.Ks[0].detach(),
                            other.viewmats[0].detach()))
        return sources

    def _binocular_loss(self, prims, cam, depth, gt, bg, sh_degree, v: int, generator: torch.Generator) -> torch.Tensor:
        mag = (0.5 + 0.5 * torch.rand(1, generator=generator).item()) * self.cfg.binocular_baseline
        if self.cfg.binocular_directions == "sideways":
            sign = 1 if torch.rand(1, generator=generator).item() < 0.5 else -1
            b, direction = sign * mag * self.model.scene_scale, (1.0, 0.0)
        else:
            angle = 2 * math.pi * torch.rand(1, generator=generator).item()
            b, direction = mag * self.model.scene_scale, (math.cos(angle), math.sin(angle))
        shifted, keep = shifted_camera(cam, b, direction), self.loss_masks[v] if self.loss_masks is not None else None
        if self.cfg.binocular_resolution != 1.0:
            shifted = shifted.scaled(self.cfg.binocular_resolution)
            depth, gt = (area_resize(x, shifted.height, shifted.width) for x in (depth, gt))
            keep = None if keep is None else area_resize(keep, shifted.height, shifted.width)
        other = render(prims, shifted, backend=self.cfg.backend, background=bg,
                       sh_degree=sh_degree, render_mode="RGB", rasterize_mode=self.cfg.rasterize_mode)
        warped, valid = warp_from_shifted(other.colors[0], depth, shifted.Ks[0], b, direction)
        if self.appearance is not None:
            warped = self.appearance.apply(warped, v)
        if keep is not None:
            valid = valid * keep
        return ((warped - gt).abs() * valid).sum() / (3 * valid.sum()).clamp_min(1.0)

    def train_step(self) -> StepStats:
        t0 = time.perf_counter()
        cfg, model = self.cfg, self.model
        B = max(1, cfg.views_per_step)
        views = [self._next_view() for _ in range(B)]
        # one view: the trainer's own stream, as always; several: one stream per view slot, drawn here, so a view's
        # background, dropout and binocular shift are the same whichever process renders it
        gens = [self.generator] if B == 1 else [
            torch.Generator().manual_seed(int(seed)) for seed in torch.randint(0, 2**62, (B,), generator=self.generator)]
        dp = self.data_parallel
        slots = dp.share(B) if dp is not None else range(B)
        with stage("setup"):
            model.set_position_lr(self.step, cfg.iters)
            sh_degree = min(self.step // max(cfg.sh_every, 1), model.sh_degree)
        total, psnr_sum, metas = 0.0, 0.0, []
        for slot in slots:
            loss, out, img, gt = self._view_loss(views[slot], gens[slot], sh_degree)
            with stage("backward"):
                (loss / B).backward()
            total += loss.detach() / B
            metas.append(out.meta)
            with torch.no_grad():
                psnr_sum += float(psnr(img.detach().clamp(0, 1), gt))
        if dp is not None:
            with stage("all-reduce"):
                dp.sum_gradients(self._trainable())
                total_sum, psnr_sum = dp.sum_scalars([float(total), psnr_sum])
                total = torch.tensor(total_sum)
        with stage("finite check"):
            finite = self._finite(total)
        if not finite:
            self._recover()
            return StepStats(self.step, float("nan"), float("nan"), len(model), time.perf_counter() - t0)
        with stage("densification"):
            meta = metas[0] if B == 1 else merge_metas(metas, dp)
            self.strategy.step_post_backward(model, self.strategy_state, self.step, meta)
        with stage("optimizer"):
            model.step()
            model.zero_grad()
            if self.appearance is not None:
                self.appearance.step()
            if self.camera_hook is not None:
                self.camera_hook.step()
        with stage("densification"):
            self.strategy.step_post_optimizer(model, self.strategy_state, self.step)
        with stage("opacity decay"):
            if cfg.opacity_decay > 0 and self.step < getattr(self.strategy, "refine_stop_iter", 0):
                with torch.no_grad():
                    p = model.params["opacities"]
                    p.copy_(torch.logit(torch.sigmoid(p) * (1 - cfg.opacity_decay), eps=1e-6))
        with stage("rollback snapshot"):
            if self.step % 100 == 0:
                self._good = {"model": copy.deepcopy(model.state_dict()),
                              "state": copy.deepcopy(self.strategy_state)}
        self.step += 1
        return StepStats(self.step, float(total), psnr_sum / B, len(model), time.perf_counter() - t0)

    def _view_loss(self, v: int, generator: torch.Generator, sh_degree: int):
        """The loss of training view ``v`` this step (photometric, regularizers, extra losses), its render, the
        (appearance-adjusted) image and the target; ``generator`` draws its background, dropout and shift."""
        cfg, model = self.cfg, self.model
        with stage("setup"):
            bg = torch.rand(3, generator=generator) if self.random_bg else self.background
            prims = drop_primitives(model.activated(), self._dropout_rate(), generator)
            binocular = self._binocular_active()
            cam = self.cameras[v] if self.camera_hook is None else self.camera_hook.camera(self.cameras, v)
            stereo = self.depth_targets is not None and cfg.stereo_depth_weight > 0
            smooth = cfg.depth_smoothness_weight > 0 and self.step < cfg.depth_smoothness_until * cfg.iters
            multiview = cfg.multiview_weight > 0 and self.step >= cfg.multiview_start * cfg.iters
            depth = (binocular or stereo or smooth or multiview
                     or any(getattr(f, "needs_depth", False) for f in self.extra_losses))
        with stage("render"):
            out = render(
                prims, cam, backend=cfg.backend, background=bg, sh_degree=sh_degree,
                render_mode="RGB+ED" if depth else "RGB", rasterize_mode=cfg.rasterize_mode,
            )
        img, gt = out.colors[0], self.images[v]
        if self.random_bg and self.masks is not None:
            gt = gt * self.masks[v] + (1 - self.masks[v]) * bg
        elif self._backdrop is not None:
            gt = gt + self._backdrop[v] * (bg - gt)
        if self.appearance is not None:  # the photo's look applies to what the camera saw, not to the backdrop
            behind = (1 - out.alphas[0]) * bg.to(img)
            img = self.appearance.apply(img - behind, v) + behind
        with stage("photometric loss"):
            keep = self._loss_weights(img, gt, v)
            kernel = ssim_kernel(out.meta.backend)
            if keep is None:
                l1 = (img - gt).abs().mean()
                loss = (1 - cfg.ssim_weight) * l1 + cfg.ssim_weight * (1 - ssim(img, gt, kernel=kernel))
            else:  # left-out pixels take the photo's value in the SSIM windows, so they neither pull nor count
                l1 = ((img - gt).abs() * keep).sum() / (3 * keep.sum()).clamp_min(1.0)
                loss = (1 - cfg.ssim_weight) * l1 + cfg.ssim_weight * (1 - ssim(img * keep + gt * (1 - keep), gt,
                                                                                 kernel=kernel))
            if self.appearance is not None:
                loss = loss + cfg.appearance_weight * self.appearance.regularization(v)
        with stage("regularizers"):
            loss = loss + self.strategy.regularization(model)
            if cfg.anisotropy_weight > 0:
                shape = model.shape_regularization(cfg.max_anisotropy)
                if shape is not None:
                    loss = loss + cfg.anisotropy_weight * shape
            if stereo:
                loss = loss + cfg.stereo_depth_weight * stereo_depth_loss(out.depths[0], self.depth_targets[v])
            if smooth:
                loss = loss + cfg.depth_smoothness_weight * depth_smoothness_loss(
                    out.depths[0], out.alphas[0], gt, cfg.depth_smoothness_edge, cfg.depth_smoothness_order,
                    self._smoothness_gate(cam, out.depths[0], gt, v))
            if cfg.background_alpha_weight > 0 and not self.random_bg:
                loss = loss + cfg.background_alpha_weight * background_alpha_loss(
                    out.alphas[0], self.images[v], self.background, cfg.background_tolerance)
        if binocular:
            with stage("binocular"):
                loss = loss + cfg.binocular_weight * self._binocular_loss(prims, cam, out.depths[0], gt, bg,
                                                                          sh_degree, v, generator)
        if multiview:
            with stage("multi-view photo"):
                loss = loss + cfg.multiview_weight * self._multiview_loss(cam, out.depths[0], out.alphas[0], gt, v)
        if self.extra_losses:
            with stage("extra losses"):
                ctx = StepContext(self, self.step, v, cam, prims, out, gt, bg, sh_degree)
                for extra_loss in self.extra_losses:
                    extra = extra_loss(ctx)
                    if extra is not None:
                        loss = loss + extra
        return loss, out, img, gt

    def _trainable(self) -> list[torch.Tensor]:
        """Every tensor the step's optimizers update: the model's, the per-photo looks', the pose corrections'."""
        tensors = list(self.model.params.values())
        if self.appearance is not None:
            tensors.append(self.appearance.params)
        if self.camera_hook is not None and hasattr(self.camera_hook, "parameters"):
            tensors += list(self.camera_hook.parameters())
        return tensors

    def _finite(self, loss: torch.Tensor) -> bool:
        """Loss, gradients and parameters all finite (render() culls non-finite primitives, so a NaN
        parameter would otherwise linger unseen)."""
        params = list(self.model.params.values()) + ([self.appearance.params] if self.appearance is not None else [])
        return all_finite(loss, *params, *(p.grad for p in params))

    def _recover(self) -> None:
        """Roll back to the last good state and halve the learning rates."""
        self.nonfinite_events += 1
        self.model.zero_grad()
        if self._good is None or self.nonfinite_events > 5:
            raise NonFiniteError(
                f"the loss became NaN/Inf at step {self.step} and rolling back did not help; "
                "try a lower learning rate or check the input images"
            )
        warnings.warn(f"non-finite loss or gradient at step {self.step}: rolled back and halved the learning rates",
                      RuntimeWarning, stacklevel=2)
        restored = type(self.model).from_state_dict(self._good["model"], self.model.lrs, device=self.model.device)
        self.model.params, self.model.optimizers = restored.params, restored.optimizers
        self.strategy_state = copy.deepcopy(self._good["state"])
        self.model.scale_lrs(0.5)

    # -- the loop -------------------------------------------------------------------------------------------

    def train(self, on_step: Optional[Callable[[StepStats], None]] = None,
              on_checkpoint: Optional[Callable[["Trainer"], None]] = None,
              should_stop: Callable[[], bool] = lambda: False) -> None:
        """Run until ``cfg.iters`` steps; calls ``on_checkpoint`` every ``checkpoint_every`` steps."""
        run_steps(self, on_step, on_checkpoint, should_stop)

    def remove_primitives(self, mask: torch.Tensor) -> None:
        """Remove the primitives where ``mask`` (N,) is True, with their optimizer moments and the strategy's
        per-primitive statistics."""
        n = len(self.model)
        self.model.remove(mask)
        keep = ~mask
        self.strategy_state = {k: v[keep] if torch.is_tensor(v) and v.dim() and len(v) == n else v
                               for k, v in self.strategy_state.items()}

    # -- checkpoints ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "strategy_state": self.strategy_state,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "order": list(self._order),
            "lrs": self.model.lrs,
            # pose corrections (``camera_hook``), so a resumed run keeps the cameras it had refined
            "camera_hook": self.camera_hook.state_dict() if hasattr(self.camera_hook, "state_dict") else None,
            "appearance": self.appearance.state_dict_full() if self.appearance is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if "fields" in state:
            raise ValueError("this checkpoint holds two fields; resume it with --fields 2")
        self.step = state["step"]
        restored = type(self.model).from_state_dict(state["model"], state["lrs"], device=self.model.device)
        self.model.params, self.model.optimizers, self.model.lrs = restored.params, restored.optimizers, restored.lrs
        # checkpoints load on the CPU; the strategies keep their statistics on the model's device
        self.strategy_state = {k: v.to(self.model.device) if torch.is_tensor(v) else v
                               for k, v in state["strategy_state"].items()}
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self._order = list(state["order"])
        if self.appearance is not None and state.get("appearance") is not None:
            self.appearance.load_state_dict_full(state["appearance"])
        hook_state = state.get("camera_hook")
        if hook_state is not None and hasattr(self.camera_hook, "load_state_dict"):
            self.camera_hook.load_state_dict(hook_state)


def save_checkpoint(trainer: Trainer, path: Path) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(trainer.state_dict(), tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} could not be read ({e}); delete it or pick another with --resume") from e

