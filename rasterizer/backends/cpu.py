"""The C++/OpenMP backend: the CPU extension built from ``csrc/cpu`` and every kind's ``kinds/<k>/*.cpp``.

Each primitive kind binds its stages to the extension itself (``kinds/<k>/compiled_stages.py``); what this
module adds is the backend-wide part: spherical-harmonics colours as one compiled pass (``sh_to_rgb``), which
every kind's pipeline uses through ``render.view_colors``. float64 inputs run in float64 (gradcheck);
everything else in float32.
"""

from __future__ import annotations

import torch

from ..build import load_extension
from ..profiling import stage
from .kernel_args import check_tensors, grad_or_zeros, kernel_dtype, prepared

NAME = "cpu"


class _ShColors(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sh, dirs, degree):
        dt = kernel_dtype(sh)
        ins = [prepared(t, dt) for t in (sh, dirs)]
        ctx.save_for_backward(*ins)
        ctx.degree = degree
        ctx.in_dtypes = (sh.dtype, dirs.dtype)
        with stage("sh colors kernel"):
            return load_extension("cpu").sh_colors_fwd(*ins, degree)

    @staticmethod
    def backward(ctx, v_rgb):
        sh, dirs = ctx.saved_tensors
        with stage("sh colors backward"):
            v_sh, v_dirs = load_extension("cpu").sh_colors_bwd(sh, dirs, ctx.degree, grad_or_zeros(v_rgb, dirs))
        return (v_sh.to(ctx.in_dtypes[0]) if ctx.needs_input_grad[0] else None,
                v_dirs.to(ctx.in_dtypes[1]) if ctx.needs_input_grad[1] else None, None)


def sh_to_rgb(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """``rasterizer.sh.sh_to_rgb`` (same contract and gradients) as one compiled pass: sh (N,K,3), dirs (C,N,3)
    -> rgb (C,N,3) = max(0, SH(dirs) + 0.5)."""
    k = (degree + 1) ** 2
    if sh.ndim != 3 or sh.shape[2] != 3 or sh.shape[1] < k or not 0 <= degree <= 3:
        raise ValueError(f"sh_degree {degree} needs {k} coefficients (N,{k},3); got sh of shape {tuple(sh.shape)}")
    check_tensors("cpu", dict(sh=sh, dirs=dirs), dict(sh=(None, None, 3), dirs=(None, sh.shape[0], 3)))
    return _ShColors.apply(sh, dirs, int(degree))
