"""Rasterizer backends and how ``render()`` picks one.

A backend is a place the kernels run: ``torch`` (the pure-PyTorch oracle), ``cpu`` (C++/OpenMP) and ``cuda``
(both compiled on first use), ``gsplat`` (gsplat's CUDA kernels, Gaussians only). ``resolve`` returns the
backend's module, which ``render()`` hands to a kind's pipeline; the kind finds its own stage functions for
it with ``kind_stages`` (each kind keeps them in ``kinds/<k>/``: ``torch_stages.py``, ``compiled_stages.py``).
What the backends share: the tile compositing of the torch stages (``torch_tiles.py``), the argument checks
and dtype rules of the compiled ones (``kernel_args.py``), and the compiled SH colours (``cpu.sh_to_rgb``).
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Callable

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


def backend_name(impl: ModuleType) -> str:
    """The name ('torch', 'cpu', 'cuda', 'gsplat') of a backend module ``resolve`` returned."""
    return impl.NAME


def kind_stages(impl: ModuleType, table: dict[str, Callable[[], tuple]], what: str) -> tuple:
    """A kind's stage functions for backend ``impl``: ``table`` maps backend names to a function returning
    them; a backend missing from it gets an error that says which ones draw ``what``."""
    name = backend_name(impl)
    if name not in table:
        only = f" (it draws {impl.DRAWS})" if hasattr(impl, "DRAWS") else ""
        choices = ", ".join(repr(b) for b in table)
        raise ValueError(f"the {name} rasterizer backend cannot draw {what}{only}; use backend {choices} or 'auto'")
    return table[name]()
