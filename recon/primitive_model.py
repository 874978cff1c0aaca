"""Trainable primitives of any kind: raw parameters, one Adam per parameter, and the edits strategies make.

``PrimitiveModel`` holds what every primitive kind shares (DESIGN.md §2): parameters stored raw in
``params[name]`` (leaf tensors whose first dimension is the primitive index, ``opacities`` always a logit),
one Adam optimizer per parameter so adding, removing or relocating primitives edits a tensor and its moments
together (``edit_params``), the exponential decay of the position learning rate, and checkpoint state.

A kind subclasses it and gives: ``KIND`` (the ``--primitive`` name), ``PARAM_NAMES``, ``POSITION`` (the
parameter whose learning rate is scaled by the scene extent and decays), ``activated()`` (the rasterizer's
primitive type), ``create(points, colors, cfg, scene_scale, device)``, ``make_strategy(cfg)`` and
``export(path, norm)`` (the scene file in the user's frame). ``register_model`` makes it selectable.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch

from sparsesplat.rasterizer.registry import KINDS

INIT_OPACITY = 0.1  # every primitive's opacity at the start (TrainConfig.init_opacity); triangles keep their own


def neighbour_spacing(points: np.ndarray, scene_scale: float) -> np.ndarray:
    """Each point's root mean square distance to its 3 nearest neighbours, the size every kind starts its
    primitives at (0.01 scene scales for a lone point; never below 1e-7 of them)."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    k = min(4, len(pts))
    if k > 1:
        d, _ = cKDTree(pts).query(pts, k=k)
        dist = np.sqrt(np.mean(d[:, 1:] ** 2, axis=1))
    else:
        dist = np.full(len(pts), 0.01 * scene_scale)
    return np.clip(dist, 1e-7 * scene_scale + 1e-12, None)


def _adam(param: torch.nn.Parameter, lr: float) -> torch.optim.Adam:
    """Adam for one parameter tensor: torch's fused kernel (one pass over the tensor instead of a dozen
    elementwise ops) where the device supports it, else the default implementation. Same update rule."""
    try:
        return torch.optim.Adam([param], lr=lr, eps=1e-15, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam([param], lr=lr, eps=1e-15)


class PrimitiveModel:
    """Raw parameters and their optimizers; ``lrs`` is a dataclass with one float per parameter name plus
    ``<POSITION>_final`` (the decayed position learning rate at the last step)."""

    KIND: ClassVar[str] = ""
    PARAM_NAMES: ClassVar[tuple[str, ...]] = ()
    POSITION: ClassVar[str] = "means"

    def __init__(self, params: dict[str, torch.Tensor], lrs, scene_scale: float):
        missing = [k for k in self.PARAM_NAMES if k not in params]
        if missing:
            raise ValueError(f"{type(self).__name__}: parameters {missing} missing")
        self.params = {k: torch.nn.Parameter(params[k].detach().clone().contiguous()) for k in self.PARAM_NAMES}
        self.lrs = lrs
        self.scene_scale = float(scene_scale)
        self.optimizers = {k: _adam(self.params[k], self._base_lr(k)) for k in self.PARAM_NAMES}

    # -- what each kind provides ----------------------------------------------------------------------

    def activated(self):
        """The primitives as ``render()`` takes them (activated values, gradients flowing to ``params``)."""
        raise NotImplementedError

    @classmethod
    def create(cls, points: np.ndarray, colors: np.ndarray, cfg, scene_scale: float, device="cpu") -> "PrimitiveModel":
        """Initial primitives at ``points`` (M,3) with ``colors`` (M,3) in [0,1]; ``cfg`` is the TrainConfig."""
        raise NotImplementedError

    def shape_regularization(self, max_ratio: float):
        """A loss that keeps primitives from degenerating into needles (longest / shortest extent above
        ``max_ratio``), or None for kinds without such a shape parameter."""
        return None

    def make_strategy(self, cfg):
        """The densification strategy (the ``recon.strategies`` interface) that ``cfg`` selects for this kind."""
        raise NotImplementedError

    def export(self, path: Path, norm):
        """Write the scene file at ``path`` in the user's frame (``norm`` undone); return what was written."""
        raise NotImplementedError

    @property
    def sh_degree(self) -> int:
        """Highest SH degree of the colours (``shN`` holds the coefficients above degree 0)."""
        return int(round((self.params["shN"].shape[1] + 1) ** 0.5)) - 1

    # -- shared machinery -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.params[self.PARAM_NAMES[0]].shape[0]

    @property
    def device(self) -> torch.device:
        return self.params[self.PARAM_NAMES[0]].device

    def _base_lr(self, name: str) -> float:
        lr = getattr(self.lrs, name)
        return lr * self.scene_scale if name == self.POSITION else lr

    def set_position_lr(self, step: int, total_steps: int) -> None:
        """Exponential decay of the position learning rate to ``<POSITION>_final`` (3DGS)."""
        t = min(max(step / max(total_steps, 1), 0.0), 1.0)
        start, end = getattr(self.lrs, self.POSITION), getattr(self.lrs, self.POSITION + "_final")
        lr = np.exp((1 - t) * np.log(start) + t * np.log(end)) * self.scene_scale
        for group in self.optimizers[self.POSITION].param_groups:
            group["lr"] = float(lr)

    def scale_lrs(self, factor: float) -> None:
        """Multiply every current and base learning rate by ``factor`` (the NaN guard halves them)."""
        self.lrs = copy.deepcopy(self.lrs)
        for f in dataclasses.fields(self.lrs):
            value = getattr(self.lrs, f.name)
            if isinstance(value, float):
                setattr(self.lrs, f.name, value * factor)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= factor

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def edit_params(self, param_fn: Callable[[str, torch.Tensor], torch.Tensor],
                    state_fn: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
        """Replace every parameter by ``param_fn(name, p)`` and each Adam moment by ``state_fn(key, m)``."""
        for name in self.PARAM_NAMES:
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
        n = len(new[self.PARAM_NAMES[0]])
        self.edit_params(
            lambda name, p: torch.cat([p, new[name].to(p)]),
            lambda _, v: torch.cat([v, torch.zeros((n,) + v.shape[1:], dtype=v.dtype, device=v.device)]),
        )

    def cap_opacities(self, at_most: float) -> None:
        """The opacity reset of 3DGS-style schedules: every opacity above ``at_most`` becomes ``at_most``
        (optimizer moments zeroed). The cap is a Python float so it applies on any device."""
        op = self.params["opacities"]
        cap = math.log(at_most / (1.0 - at_most))  # opacities are stored as logits
        self.overwrite(torch.arange(len(self), device=op.device), {"opacities": torch.clamp(op, max=cap)})

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
            "kind": self.KIND,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scene_scale": self.scene_scale,
        }

    @classmethod
    def from_state_dict(cls, state: dict, lrs, device="cpu") -> "PrimitiveModel":
        kind = state.get("kind", cls.KIND)
        if kind != cls.KIND:
            raise ValueError(f"the checkpoint holds {kind} primitives, not {cls.KIND}; resume with --primitive {kind}")
        model = cls({k: v.to(device) for k, v in state["params"].items()}, lrs, state["scene_scale"])
        for k, o in model.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        return model


MODELS: dict[str, type[PrimitiveModel]] = {}


def register_model(cls: type[PrimitiveModel]) -> type[PrimitiveModel]:
    """Make ``cls`` selectable as ``--primitive <cls.KIND>`` (usable as a class decorator). ``KIND`` must name a
    kind the rasterizer draws (``rasterizer/registry.py``), so a trained model can always be rendered."""
    if cls.KIND not in KINDS:
        raise ValueError(f"{cls.__name__}.KIND = {cls.KIND!r} is not a primitive kind the rasterizer draws "
                         f"({', '.join(KINDS)}); register its rasterizer kind first (rasterizer/kinds/README.md)")
    MODELS[cls.KIND] = cls
    return cls
