"""C++/OpenMP Gaussian backend: the compiled kernels of ``csrc/`` behind autograd Functions.

Provides the two stage functions every backend has (see ``backends/__init__.py``); gradients are analytic
(``csrc/gaussian.h``), not autograd. The extension is built on first call (``rasterizer/build.py``).
float64 inputs run in float64 (used by gradcheck); everything else runs in float32.
``cuda.py`` reuses these wrappers with the CUDA extension.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..build import load_extension
from ..profiling import stage
from .cpu_convexes import project_convexes, rasterize_convexes  # noqa: F401  (convex stages, same extension)
from .cpu_triangles import make_triangle_stages
from .kernel_args import check_tensors, grad_or_zeros, kernel_dtype, prepared
from .types import Projection


def _shapes(shapes: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """GES's shapes for the kernels, or the empty tensor that tells them the primitives are Gaussians."""
    return torch.empty(0, dtype=like.dtype, device=like.device) if shapes is None else prepared(shapes, like.dtype)


def _make(kind: str) -> tuple[Callable, Callable]:
    """(project_gaussians, rasterize) bound to the ``kind`` extension; both also serve GES (``shapes``)."""

    class _Project(torch.autograd.Function):
        @staticmethod
        def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far, aa, shapes):
            dt = kernel_dtype(means)
            ins = [prepared(t, dt) for t in (means, quats, scales, opacities, viewmats, Ks)]
            beta = _shapes(shapes, ins[0])
            out = load_extension(kind).project_gaussians_fwd(*ins, width, height, eps2d, near, far, aa, beta)
            means2d, conics, depths, opac, radii = out
            ctx.save_for_backward(*ins, radii, beta)
            ctx.args = (width, height, eps2d, near, far, aa)
            ctx.in_dtypes = [t.dtype for t in (means, quats, scales, opacities, viewmats)]
            ctx.mark_non_differentiable(radii)
            return means2d, conics, depths, opac, radii

        @staticmethod
        def backward(ctx, v_means2d, v_conics, v_depths, v_opac, _v_radii):
            *ins, radii, beta = ctx.saved_tensors
            means2d_like = torch.empty(radii.shape[:2] + (2,), dtype=ins[0].dtype, device=radii.device)
            conics_like = torch.empty(radii.shape[:2] + (3,), dtype=ins[0].dtype, device=radii.device)
            scalar_like = torch.empty(radii.shape[:2], dtype=ins[0].dtype, device=radii.device)
            with stage("project backward"):
                grads = load_extension(kind).project_gaussians_bwd(
                    *ins, *ctx.args, radii,
                    grad_or_zeros(v_means2d, means2d_like), grad_or_zeros(v_conics, conics_like),
                    grad_or_zeros(v_depths, scalar_like), grad_or_zeros(v_opac, scalar_like), beta,
                )
            out = [g.to(dt) if need else None
                   for g, dt, need in zip(grads, ctx.in_dtypes, ctx.needs_input_grad[:5])]
            return (*out, None, None, None, None, None, None, None, None)

    class _Rasterize(torch.autograd.Function):
        @staticmethod
        def forward(ctx, means2d, conics, colors, opacities, depths, radii, width, height, tile_size, shapes):
            dt = kernel_dtype(means2d)
            ins = [prepared(t, dt) for t in (means2d, conics, colors, opacities, depths)]
            radii_i = radii.detach().to(torch.int32).contiguous()
            beta = _shapes(shapes, ins[0])
            feats, alphas, max_w, offsets, ids, last, T_final = load_extension(kind).rasterize_fwd(
                *ins, radii_i, width, height, tile_size, beta
            )
            ctx.save_for_backward(*ins, offsets, ids, last, T_final, beta)
            ctx.args = (width, height, tile_size)
            ctx.in_dtypes = [t.dtype for t in (means2d, conics, colors, opacities, depths)]
            ctx.in_dtypes.append(None if shapes is None else shapes.dtype)
            ctx.mark_non_differentiable(max_w)
            return feats, alphas, max_w

        @staticmethod
        def backward(ctx, v_feats, v_alphas, _v_max_w):
            m2, con, col, op, dep, offsets, ids, last, T_final, beta = ctx.saved_tensors
            C, N = m2.shape[:2]
            H, W = last.shape[1:]
            feats_like = torch.empty((C, H, W, 4), dtype=m2.dtype, device=m2.device)
            alphas_like = torch.empty((C, H, W, 1), dtype=m2.dtype, device=m2.device)
            with stage("rasterize backward"):
                grads = load_extension(kind).rasterize_bwd(
                    m2, con, col, op, dep, *ctx.args, offsets, ids, last, T_final,
                    grad_or_zeros(v_feats, feats_like), grad_or_zeros(v_alphas, alphas_like), beta,
                )
            out = [g.to(dt) if need else None
                   for g, dt, need in zip(grads[:5], ctx.in_dtypes, ctx.needs_input_grad[:5])]
            v_shapes = grads[5].to(ctx.in_dtypes[5]) if ctx.needs_input_grad[9] else None
            return (*out, None, None, None, None, v_shapes)

    def project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                          eps2d=0.3, near=0.01, far=1e10, antialiased=False, shapes=None) -> Projection:
        """EWA projection of N Gaussians into C cameras (see ``backends/__init__.py``).

        means (N,3), quats (N,4) wxyz any norm, scales (N,3), opacities (N,), viewmats (C,4,4), Ks (C,3,3);
        shapes (N,): GES's betas, which set the radii (None: Gaussians).
        Returns a ``Projection`` of (C,N,...) tensors; culled entries are zero with radii 0.
        """
        N, C = means.shape[0], viewmats.shape[0]
        tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, viewmats=viewmats, Ks=Ks)
        if shapes is not None:
            tensors["shapes"] = shapes
        check_tensors(kind, tensors, dict(means=(N, 3), quats=(N, 4), scales=(N, 3), opacities=(N,),
                                          viewmats=(C, 4, 4), Ks=(C, 3, 3), shapes=(N,)))
        out = _Project.apply(means, quats, scales, opacities, viewmats, Ks, int(width), int(height),
                             float(eps2d), float(near), float(far), bool(antialiased), shapes)
        return Projection(*out)

    def rasterize(means2d, conics, colors, opacities, depths, radii, width, height, tile_size=16, shapes=None):
        """Front-to-back compositing in 16x16 tiles.

        means2d (C,N,2), conics (C,N,3), colors (C,N,3), opacities (C,N), depths (C,N), radii (C,N,2);
        shapes (C,N): GES's betas (None: Gaussians).
        Returns feats (C,H,W,4) = [sum w rgb, sum w z], alphas (C,H,W,1) = 1 - T, max_weight (C,N).
        """
        C, N = means2d.shape[:2]
        tensors = dict(means2d=means2d, conics=conics, colors=colors, opacities=opacities, depths=depths, radii=radii)
        if shapes is not None:
            tensors["shapes"] = shapes
        check_tensors(kind, tensors, dict(means2d=(C, N, 2), conics=(C, N, 3), colors=(C, N, 3), opacities=(C, N),
                                          depths=(C, N), radii=(C, N, 2), shapes=(C, N)))
        if int(tile_size) <= 0 or int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width, height and tile_size must be positive; got {width}, {height}, {tile_size}")
        return _Rasterize.apply(means2d, conics, colors, opacities, depths, radii,
                                int(width), int(height), int(tile_size), shapes)

    return project_gaussians, rasterize


project_gaussians, rasterize = _make("cpu")


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


__all__ = ["project_gaussians", "rasterize", "sh_to_rgb", "Projection"]

project_triangles, rasterize_triangles = make_triangle_stages("cpu")
