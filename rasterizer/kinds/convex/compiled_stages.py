"""Convex stages of the compiled backends (C++/OpenMP and CUDA) behind autograd Functions.

Same two stage functions as ``torch_stages.py``; gradients are analytic (``convex.h``): edge-line
gradients go back to the hull vertices, through the projection to the 3D points, and to delta, sigma,
opacity, colours and the camera poses. float64 inputs run in float64 (gradcheck), the rest in float32.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from ...backends.kernel_args import check_tensors, grad_or_zeros, kernel_dtype, prepared
from ...build import load_extension
from .torch_stages import ConvexProjection


@functools.cache
def stages(kind: str) -> tuple[Callable, Callable]:
    """(project_convexes, rasterize_convexes) bound to the ``kind`` ('cpu' or 'cuda') extension."""

    class _Project(torch.autograd.Function):
        @staticmethod
        def forward(ctx, points, delta, sigma, opacities, viewmats, Ks, width, height, near, far):
            dt = kernel_dtype(points)
            ins = [prepared(t, dt) for t in (points, delta, sigma, opacities, viewmats, Ks)]
            out = load_extension(kind).project_convexes_fwd(*ins, width, height, near, far)
            means2d, lines, nedges, sharp, depths, opac, radii = out
            ctx.save_for_backward(*ins, radii)
            ctx.args = (width, height, near, far)
            ctx.in_dtypes = [t.dtype for t in (points, delta, sigma, opacities, viewmats)]
            ctx.mark_non_differentiable(nedges, radii)
            return means2d, lines, nedges, sharp, depths, opac, radii

        @staticmethod
        def backward(ctx, v_m2, v_lines, _v_n, v_sharp, v_depths, v_opac, _v_r):
            *ins, radii = ctx.saved_tensors
            C, N = radii.shape[:2]
            P = ins[0].shape[1]
            dt, dev = ins[0].dtype, radii.device
            grads = load_extension(kind).project_convexes_bwd(
                *ins, *ctx.args, radii,
                grad_or_zeros(v_m2, torch.empty((C, N, 2), dtype=dt, device=dev)),
                grad_or_zeros(v_lines, torch.empty((C, N, P, 3), dtype=dt, device=dev)),
                grad_or_zeros(v_sharp, torch.empty((C, N), dtype=dt, device=dev)),
                grad_or_zeros(v_depths, torch.empty((C, N), dtype=dt, device=dev)),
                grad_or_zeros(v_opac, torch.empty((C, N), dtype=dt, device=dev)),
            )
            out = [g.to(t) if need else None for g, t, need in zip(grads, ctx.in_dtypes, ctx.needs_input_grad[:5])]
            return (*out, None, None, None, None, None)

    class _Rasterize(torch.autograd.Function):
        @staticmethod
        def forward(ctx, means2d, lines, nedges, sharp, colors, opacities, depths, radii, width, height, tile_size):
            dt = kernel_dtype(means2d)
            ins = [prepared(t, dt) for t in (means2d, lines)]
            n_i = nedges.detach().to(torch.int32).contiguous()
            rest = [prepared(t, dt) for t in (sharp, colors, opacities, depths)]
            radii_i = radii.detach().to(torch.int32).contiguous()
            feats, alphas, max_w, offsets, ids, last, T_final = load_extension(kind).rasterize_convexes_fwd(
                *ins, n_i, *rest, radii_i, width, height, tile_size
            )
            ctx.save_for_backward(*ins, n_i, *rest, radii_i, offsets, ids, last, T_final)
            ctx.args = (width, height, tile_size)
            ctx.in_dtypes = [t.dtype for t in (means2d, lines, nedges, sharp, colors, opacities, depths)]
            ctx.mark_non_differentiable(max_w)
            return feats, alphas, max_w

        @staticmethod
        def backward(ctx, v_feats, v_alphas, _v_max_w):
            m2, lines, n_i, sharp, col, op, dep, radii_i, offsets, ids, last, T_final = ctx.saved_tensors
            C = m2.shape[0]
            H, W = last.shape[1:]
            g_m2, g_lines, g_sharp, g_col, g_op, g_dep = load_extension(kind).rasterize_convexes_bwd(
                m2, lines, n_i, sharp, col, op, dep, radii_i, *ctx.args, offsets, ids, last, T_final,
                grad_or_zeros(v_feats, torch.empty((C, H, W, 4), dtype=m2.dtype, device=m2.device)),
                grad_or_zeros(v_alphas, torch.empty((C, H, W, 1), dtype=m2.dtype, device=m2.device)),
            )
            grads = [g_m2, g_lines, None, g_sharp, g_col, g_op, g_dep]
            out = [g.to(t) if (g is not None and need) else None
                   for g, t, need in zip(grads, ctx.in_dtypes, ctx.needs_input_grad[:7])]
            return (*out, None, None, None, None)

    def project_convexes(points, delta, sigma, opacities, viewmats, Ks, width, height,
                         near=0.01, far=1e10) -> ConvexProjection:
        """Project N convexes into C cameras (see ``torch_stages.project_convexes``).

        points (N,P,3) with 3 <= P <= 8, delta (N,), sigma (N,), opacities (N,), viewmats (C,4,4), Ks (C,3,3).
        """
        N, P = points.shape[:2]
        C = viewmats.shape[0]
        check_tensors(kind, dict(points=points, delta=delta, sigma=sigma, opacities=opacities, viewmats=viewmats,
                                 Ks=Ks),
                      dict(points=(N, P, 3), delta=(N,), sigma=(N,), opacities=(N,), viewmats=(C, 4, 4), Ks=(C, 3, 3)))
        if not 3 <= P <= 8:
            raise ValueError(f"convexes need 3 to 8 points each; got {P}")
        out = _Project.apply(points, delta, sigma, opacities, viewmats, Ks, int(width), int(height),
                             float(near), float(far))
        return ConvexProjection(*out)

    def rasterize_convexes(means2d, lines, nedges, sharp, colors, opacities, depths, radii, width, height,
                           tile_size=16):
        """Front-to-back compositing of projected convexes in 16x16 tiles.

        Returns feats (C,H,W,4) = [sum w rgb, sum w z], alphas (C,H,W,1) = 1 - T, max_weight (C,N).
        """
        C, N = means2d.shape[:2]
        P = lines.shape[2] if lines.ndim == 4 else -1
        check_tensors(kind, dict(means2d=means2d, lines=lines, nedges=nedges, sharp=sharp, colors=colors,
                                 opacities=opacities, depths=depths, radii=radii),
                      dict(means2d=(C, N, 2), lines=(C, N, P, 3), nedges=(C, N), sharp=(C, N), colors=(C, N, 3),
                           opacities=(C, N), depths=(C, N), radii=(C, N, 2)))
        if not 3 <= P <= 8:
            raise ValueError(f"lines must be (C, N, P, 3) with 3 <= P <= 8; got {tuple(lines.shape)}")
        if int(tile_size) <= 0 or int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width, height and tile_size must be positive; got {width}, {height}, {tile_size}")
        return _Rasterize.apply(means2d, lines, nedges, sharp, colors, opacities, depths, radii,
                                int(width), int(height), int(tile_size))

    return project_convexes, rasterize_convexes

