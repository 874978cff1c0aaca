"""Rasterizer backends and how ``render()`` picks one.

Every backend module provides the same two differentiable stage functions for Gaussians:

- ``project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far,
  antialiased, shapes=None) -> Projection`` (see ``types.py``);
- ``rasterize(means2d, conics, colors, opacities, depths, radii, width, height, tile_size, shapes=None)
  -> (feats (C,H,W,4) = [sum w rgb, sum w z], alphas (C,H,W,1), max_weight (C,N))``;
  ``shapes`` (GES's betas: (N,) to the projection, (C,N) to the rasterizer) turns both into GES's, where a
  backend can (``SHAPED = False`` in a module that cannot: gsplat);

and, for triangles, ``project_triangles`` / ``rasterize_triangles`` (contract in ``torch_triangles.py``).

``torch`` is the pure-PyTorch oracle; ``cpu`` (C++/OpenMP) and ``cuda`` are compiled on first use;
``gsplat`` delegates to gsplat's CUDA kernels.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import torch

BACKENDS = ("torch", "cpu", "cuda", "gsplat")
_MODULES = {"torch": "torch_backend", "cpu": "cpu", "cuda": "cuda", "gsplat": "gsplat_backend"}
_warned: set[str] = set()


def _module(name: str) -> ModuleType:
    return importlib.import_module(f".{_MODULES[name]}", __name__)


def is_available(name: str) -> bool:
    """Whether backend ``name`` can run here (may build the extension on first call)."""
    if name == "torch":
        return True
    if name == "gsplat":
        try:
            importlib.import_module("gsplat")
        except Exception:
            return False
        return torch.cuda.is_available()
    if name == "cuda" and not torch.cuda.is_available():
        return False
    from ..build import is_available as ext_available

    return ext_available(name)


def _why(name: str) -> str:
    from ..build import _failures

    err = _failures.get(name)
    return str(err).strip() if err else "no CUDA device" if name == "cuda" else "not built"


def resolve(name: str, device: torch.device) -> ModuleType:
    """The backend module for ``name`` ('auto' picks cuda on CUDA tensors, else cpu, else torch)."""
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if name == "auto":
        order = ["cuda", "torch"] if device.type == "cuda" else ["cpu", "torch"]
        for cand in order:
            if is_available(cand):
                return _module(cand)
            if cand not in _warned and cand != "torch":
                _warned.add(cand)
                warnings.warn(
                    f"the {cand} rasterizer backend is unavailable here ({_why(cand)}); "
                    "falling back to the slow pure-PyTorch backend",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return _module("torch")
    if name in ("cuda", "gsplat") and device.type != "cuda":
        raise ValueError(f"backend {name!r} needs CUDA tensors; got tensors on {device}")
    if name == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors; got tensors on {device}")
    return _module(name)
