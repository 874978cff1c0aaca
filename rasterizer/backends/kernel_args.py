"""What the compiled backends' autograd wrappers share (Gaussians, triangles, convexes; CPU and CUDA): the dtype
the kernels run in, contiguous detached inputs, zero gradients for outputs autograd left without one, and the
device and shape checks made before tensors reach C++ (which trusts them)."""

from __future__ import annotations

import torch


def kernel_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def prepared(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.detach().to(dtype).contiguous()


def grad_or_zeros(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g.to(like.dtype).contiguous()


def check_tensors(kind: str, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple]) -> None:
    """Device and shape checks before the tensors reach C++ (which trusts them)."""
    for name, t in tensors.items():
        if t.device.type != kind:
            raise ValueError(f"the {kind} rasterizer backend needs {kind} tensors; {name} is on {t.device}")
        want = shapes[name]
        if t.ndim != len(want) or any(w is not None and s != w for s, w in zip(t.shape, want)):
            pretty = tuple("*" if w is None else w for w in want)
            raise ValueError(f"{name} must have shape {pretty}, got {tuple(t.shape)}")
