"""Trainable Gaussians: raw parameters, their Adam optimizers, and the edits densification makes.

Parameters are stored raw as in 3DGS (DESIGN.md §2): ``means``, ``quats`` (unnormalized wxyz),
``scales`` (log), ``opacities`` (logit), ``sh0`` (N,1,3) and ``shN`` (N,K-1,3). Each has its own Adam, so
adding, removing or relocating primitives edits one tensor and its moments together (``edit_params``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sparsesplat.rasterizer import Gaussians
from sparsesplat.rasterizer.sh import rgb_to_sh0

PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


@dataclass
class LearningRates:
    """3DGS learning rates; ``means`` is scaled by the scene extent and decays exponentially."""

    means: float = 1.6e-4
    means_final: float = 1.6e-6
    quats: float = 1e-3
    scales: float = 5e-3
    opacities: float = 5e-2
    sh0: float = 2.5e-3
    shN: float = 2.5e-3 / 20


class GaussianModel:
    """Raw parameters (``params[name]`` are leaf tensors with grad) and one Adam optimizer per parameter."""

    def __init__(self, params: dict[str, torch.Tensor], lrs: LearningRates, scene_scale: float):
        self.params = {k: torch.nn.Parameter(v.detach().clone().contiguous()) for k, v in params.items()}
        self.lrs = lrs
        self.scene_scale = scene_scale
        self.optimizers = {
            k: torch.optim.Adam([self.params[k]], lr=self._base_lr(k), eps=1e-15) for k in PARAM_NAMES
        }

    def _base_lr(self, name: str) -> float:
        lr = getattr(self.lrs, name)
        return lr * self.scene_scale if name == "means" else lr

    @classmethod
    def from_points(cls, points: np.ndarray, colors: np.ndarray, sh_degree: int, lrs: LearningRates,
                    scene_scale: float, init_opacity: float = 0.1, init_scale: float = 1.0,
                    device="cpu") -> "GaussianModel":
        """Isotropic Gaussians at ``points`` sized by the mean distance to their 3 nearest neighbours."""
        from scipy.spatial import cKDTree

        pts = np.asarray(points, dtype=np.float64)
        k = min(4, len(pts))
        if k > 1:
            d, _ = cKDTree(pts).query(pts, k=k)
            dist = np.sqrt(np.mean(d[:, 1:] ** 2, axis=1))
        else:
            dist = np.full(len(pts), 0.01 * scene_scale)
        dist = np.clip(dist, 1e-7 * scene_scale + 1e-12, None)
        n = len(pts)
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        params = {
            "means": t(pts),
            "quats": torch.tensor([1.0, 0, 0, 0], device=device).repeat(n, 1),
            "scales": torch.log(t(dist * init_scale))[:, None].repeat(1, 3),
            "opacities": torch.logit(torch.full((n,), init_opacity, device=device)),
            "sh0": rgb_to_sh0(t(colors))[:, None, :],
            "shN": torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3, device=device),
        }
        return cls(params, lrs, scene_scale)

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round((self.params["shN"].shape[1] + 1) ** 0.5)) - 1

    def activated(self) -> Gaussians:
        p = self.params
        return Gaussians(
            means=p["means"],
            quats=p["quats"],
            scales=torch.exp(p["scales"]),
            opacities=torch.sigmoid(p["opacities"]),
            sh=torch.cat([p["sh0"], p["shN"]], dim=1),
        )

    def set_means_lr(self, step: int, total_steps: int) -> None:
        """Exponential decay of the position learning rate from ``means`` to ``means_final`` (3DGS)."""
        t = min(max(step / max(total_steps, 1), 0.0), 1.0)
        lr = np.exp((1 - t) * np.log(self.lrs.means) + t * np.log(self.lrs.means_final)) * self.scene_scale
        for group in self.optimizers["means"].param_groups:
            group["lr"] = float(lr)

    def scale_lrs(self, factor: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= factor

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    # -- edits used by densification strategies -------------------------------------------------------

    def edit_params(self, param_fn: Callable[[str, torch.Tensor], torch.Tensor],
                    state_fn: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
        """Replace every parameter by ``param_fn(name, p)`` and each Adam moment by ``state_fn(key, m)``."""
        for name in PARAM_NAMES:
            old = self.params[name]
            new = torch.nn.Parameter(param_fn(name, old.detach()).contiguous())
            opt = self.optimizers[name]
            st = opt.state.pop(old, {})
            for key, v in list(st.items()):
                if key != "step" and torch.is_tensor(v) and v.shape[:1] == old.shape[:1]:
                    st[key] = state_fn(key, v)
            opt.param_groups[0]["params"] = [new]
            if st:
                opt.state[new] = st
            self.params[name] = new

    def remove(self, mask: torch.Tensor) -> None:
        keep = ~mask
        self.edit_params(lambda _, p: p[keep], lambda _, v: v[keep])

    def append(self, new: dict[str, torch.Tensor]) -> None:
        """Add primitives; their Adam moments start at zero."""
        self.edit_params(
            lambda name, p: torch.cat([p, new[name].to(p)]),
            lambda _, v: torch.cat([v, torch.zeros((len(new["means"]),) + v.shape[1:], dtype=v.dtype, device=v.device)]),
        )

    def overwrite(self, idx: torch.Tensor, values: dict[str, torch.Tensor], reset_state: bool = True) -> None:
        """Set the primitives ``idx`` to ``values`` (a subset of names), zeroing their moments."""
        def pfn(name, p):
            if name in values:
                p = p.clone()
                p[idx] = values[name].to(p)
            return p

        def sfn(_, v):
            if reset_state:
                v = v.clone()
                v[idx] = 0
            return v

        self.edit_params(pfn, sfn)

    def state_dict(self) -> dict:
        return {
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scene_scale": self.scene_scale,
        }

    @classmethod
    def from_state_dict(cls, state: dict, lrs: LearningRates, device="cpu") -> "GaussianModel":
        model = cls({k: v.to(device) for k, v in state["params"].items()}, lrs, state["scene_scale"])
        for k, o in model.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        return model
