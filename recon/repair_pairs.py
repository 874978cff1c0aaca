"""Degraded/clean image pairs of the scene itself, to train the per-scene repair network.

- Leave-one-out (GaussianObject): for each training view, a short run on the other views, then that
  view's render (degraded: the model never saw it) beside its photo (clean). Rendered at half and at the
  end of the short run, so two levels of degradation are seen.
- Perturbed primitives: renders of the training views by the main model with a random fraction of its
  primitives dropped (holes, thinned surfaces), beside the photos.

The pairs are cached in the run folder so a resumed run does not redo the leave-one-out training.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable

import torch

from sparsesplat.rasterizer import Cameras, render

from .io import atomic_path
from .regularizers import drop_primitives


def short_schedule(cfg, steps: int):
    """A copy of the TrainConfig ``cfg`` for ``steps`` steps: densification windows scaled to the length,
    no checkpoints, no binocular term (any strategy config with refine_* fields is scaled)."""
    short = copy.deepcopy(cfg)
    factor = steps / max(cfg.iters, 1)
    short.iters, short.checkpoint_every, short.binocular_weight = steps, 0, 0.0
    for f in dataclasses.fields(short):
        sub = getattr(short, f.name)
        if dataclasses.is_dataclass(sub):
            for name in ("refine_start_iter", "refine_stop_iter"):
                if hasattr(sub, name):
                    setattr(sub, name, max(1, int(getattr(sub, name) * factor)))
            if hasattr(sub, "refine_every"):
                sub.refine_every = max(10, min(sub.refine_every, steps // 10))
    return short


def leave_one_out_pairs(make_trainer: Callable, images: torch.Tensor, cameras: Cameras, background: torch.Tensor,
                        steps: int, log=print) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean), each (2V,H,W,3) on the CPU: view v rendered by models trained on the other views.

    make_trainer(images, cameras, seed) -> a ``Trainer`` of a fresh model on those views for ``steps`` steps.
    """
    V = len(images)
    degraded, clean = [], []
    for v in range(V):
        others = [i for i in range(V) if i != v]
        trainer = make_trainer(images[others], cameras[others], v + 1)
        for stop in (steps // 2, steps):
            while trainer.step < stop:
                trainer.train_step()
            with torch.no_grad():
                out = render(trainer.model.activated(), cameras[v], backend=trainer.cfg.backend,
                             background=background, render_mode="RGB")
            degraded.append(out.colors[0].clamp(0, 1).cpu())
            clean.append(images[v].cpu())
        log(f"repair prior: leave-one-out view {v + 1}/{V} ({len(trainer.model)} primitives)")
    return torch.stack(degraded), torch.stack(clean)


@torch.no_grad()
def perturbed_pairs(model, images: torch.Tensor, cameras: Cameras, background: torch.Tensor, backend: str,
                    rates=(0.2, 0.4), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean): every training view rendered with ``rate`` of the primitives dropped (opacities of
    the rest not rescaled: thinner, holed renders), beside its photo."""
    g = torch.Generator().manual_seed(seed)
    degraded, clean = [], []
    for rate in rates:
        for v in range(len(images)):
            prims = drop_primitives(model.activated(), rate, g)
            prims.opacities = prims.opacities * (1 - rate)  # undo DropGaussian's compensation
            out = render(prims, cameras[v], backend=backend, background=background, render_mode="RGB")
            degraded.append(out.colors[0].clamp(0, 1).cpu())
            clean.append(images[v].cpu())
    return torch.stack(degraded), torch.stack(clean)


def cached_pairs(path: Path, make: Callable[[], tuple[torch.Tensor, torch.Tensor]]):
    """The pairs stored at ``path``, or made by ``make()`` and stored there."""
    if path.exists():
        try:
            d = torch.load(path, map_location="cpu")
            return d["degraded"], d["clean"]
        except Exception:  # a partial or foreign file: make the pairs again
            pass
    degraded, clean = make()
    with atomic_path(path) as tmp:
        torch.save({"degraded": degraded, "clean": clean}, tmp)
    return degraded, clean
