"""Compiled Gaussian stages (C++/OpenMP or CUDA) behind autograd Functions, with analytic gradients.

``stages(kind)`` returns ``(project_gaussians, rasterize)`` bound to the ``kind`` extension ('cpu' or 'cuda');
the math is ``gaussian.h`` (GES's shaped falloff included), the contract the one of ``torch_stages.py``.
float64 inputs run in float64 (used by gradcheck); everything else runs in float32. The extension is built on
first call (``rasterizer/build.py``).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from ...backends.kernel_args import check_tensors, grad_or_zeros, kernel_dtype, prepared
from ...build import load_extension
from ...profiling import stage
from .torch_stages import Projection


def _shapes(shapes: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """GES's shapes for the kernels, or the empty tensor that tells them the primitives are Gaussians."""
    return torch.empty(0, dtype=like.dtype, device=like.device) if shapes is None else prepared(shapes, like.dtype)


@functools.cache
def stages(kind: str) -> tuple[Callable, Callable]:
    """(project_gaussians, rasterize) bound to the ``kind`` ('cpu' or 'cuda') extension; both also serve GES
    (``shapes``)."""

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
            # after the image: what the backward needs of the binning (the cpu backend adds each pair's row
            # mask to the tile lists), then last and T_final (C,H,W)
            feats, alphas, max_w, *binning = load_extension(kind).rasterize_fwd(
                *ins, radii_i, width, height, tile_size, beta
            )
            ctx.save_for_backward(*ins, beta, *binning)
            ctx.args = (width, height, tile_size)
            ctx.in_dtypes = [t.dtype for t in (means2d, conics, colors, opacities, depths)]
            ctx.in_dtypes.append(None if shapes is None else shapes.dtype)
            ctx.mark_non_differentiable(max_w)
            return feats, alphas, max_w

        @staticmethod
        def backward(ctx, v_feats, v_alphas, _v_max_w):
            m2, con, col, op, dep, beta, *binning = ctx.saved_tensors
            C, N = m2.shape[:2]
            H, W = binning[-1].shape[1:]
            feats_like = torch.empty((C, H, W, 4), dtype=m2.dtype, device=m2.device)
            alphas_like = torch.empty((C, H, W, 1), dtype=m2.dtype, device=m2.device)
            with stage("rasterize backward"):
                grads = load_extension(kind).rasterize_bwd(
                    m2, con, col, op, dep, *ctx.args, *binning,
                    grad_or_zeros(v_feats, feats_like), grad_or_zeros(v_alphas, alphas_like), beta,
                )
            out = [g.to(dt) if need else None
                   for g, dt, need in zip(grads[:5], ctx.in_dtypes, ctx.needs_input_grad[:5])]
            v_shapes = grads[5].to(ctx.in_dtypes[5]) if ctx.needs_input_grad[9] else None
            return (*out, None, None, None, None, v_shapes)

    def project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                          eps2d=0.3, near=0.01, far=1e10, antialiased=False, shapes=None) -> Projection:
        """EWA projection of N Gaussians into C cameras (the contract of ``torch_stages.project_gaussians``).

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
