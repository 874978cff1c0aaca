"""Compiled triangle stages (C++/OpenMP or CUDA) behind autograd Functions, with analytic gradients.

``stages(kind)`` returns ``(project_triangles, rasterize_triangles)`` bound to the ``kind``
extension ('cpu' or 'cuda'); the math is ``triangle.h``, the contract the one of
``torch_stages.py``. float64 inputs run in float64 (gradcheck); everything else in float32.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from ...backends.kernel_args import check_tensors, grad_or_zeros, kernel_dtype, prepared
from ...build import load_extension
from .torch_stages import TriangleProjection


@functools.cache
def stages(kind: str) -> tuple[Callable, Callable]:
    """(project_triangles, rasterize_triangles) bound to the ``kind`` extension."""

    class _Project(torch.autograd.Function):
        @staticmethod
        def forward(ctx, vertices, sigmas, opacities, viewmats, Ks, width, height, near, far):
            dt = kernel_dtype(vertices)
            ins = [prepared(t, dt) for t in (vertices, sigmas, opacities, viewmats, Ks)]
            verts2d, depths, means2d, bounds, radii = load_extension(kind).project_triangles_fwd(
                *ins, width, height, near, far
            )
            ctx.save_for_backward(*ins, radii)
            ctx.args = (width, height, near, far)
            ctx.in_dtypes = (vertices.dtype, viewmats.dtype)
            ctx.mark_non_differentiable(means2d, bounds, radii)
            return verts2d, depths, means2d, bounds, radii

        @staticmethod
        def backward(ctx, v_verts2d, v_depths, _m, _b, _r):
            *ins, radii = ctx.saved_tensors
            C, N = radii.shape[:2]
            like2 = torch.empty((C, N, 3, 2), dtype=ins[0].dtype, device=radii.device)
            like1 = torch.empty((C, N), dtype=ins[0].dtype, device=radii.device)
            v_vertices, v_viewmats = load_extension(kind).project_triangles_bwd(
                *ins, *ctx.args, radii, grad_or_zeros(v_verts2d, like2), grad_or_zeros(v_depths, like1)
            )
            need = ctx.needs_input_grad
            return (v_vertices.to(ctx.in_dtypes[0]) if need[0] else None, None, None,
                    v_viewmats.to(ctx.in_dtypes[1]) if need[3] else None, None, None, None, None, None)

    class _Rasterize(torch.autograd.Function):
        @staticmethod
        def forward(ctx, verts2d, sigmas, colors, opacities, depths, bounds, radii, width, height, tile_size):
            dt = kernel_dtype(verts2d)
            ins = [prepared(t, dt) for t in (verts2d, sigmas, colors, opacities, depths)]
            bounds_p = prepared(bounds, dt)
            radii_i = radii.detach().to(torch.int32).contiguous()
            feats, alphas, max_w, offsets, ids, last, T_final = load_extension(kind).rasterize_triangles_fwd(
                *ins, bounds_p, radii_i, width, height, tile_size
            )
            ctx.save_for_backward(*ins, bounds_p, radii_i, offsets, ids, last, T_final)
            ctx.args = (width, height, tile_size)
            ctx.in_dtypes = [t.dtype for t in (verts2d, sigmas, colors, opacities, depths)]
            ctx.mark_non_differentiable(max_w)
            return feats, alphas, max_w

        @staticmethod
        def backward(ctx, v_feats, v_alphas, _v_max_w):
            v2, sg, col, op, dep, bounds, radii, offsets, ids, last, T_final = ctx.saved_tensors
            C, H, W = last.shape
            feats_like = torch.empty((C, H, W, 4), dtype=v2.dtype, device=v2.device)
            alphas_like = torch.empty((C, H, W, 1), dtype=v2.dtype, device=v2.device)
            grads = load_extension(kind).rasterize_triangles_bwd(
                v2, sg, col, op, dep, bounds, radii, *ctx.args, offsets, ids, last, T_final,
                grad_or_zeros(v_feats, feats_like), grad_or_zeros(v_alphas, alphas_like),
            )
            out = [g.to(dt) if need else None for g, dt, need in zip(grads, ctx.in_dtypes, ctx.needs_input_grad[:5])]
            return (*out, None, None, None, None, None)

    def project_triangles(vertices, sigmas, opacities, viewmats, Ks, width, height, near=0.01, far=1e10
                          ) -> TriangleProjection:
        """Project, cull and bound N triangles in C cameras (see ``torch_stages.py``).

        vertices (N,3,3), sigmas (N,), opacities (N,), viewmats (C,4,4), Ks (C,3,3).
        """
        N, C = vertices.shape[0], viewmats.shape[0]
        check_tensors(kind, dict(vertices=vertices, sigmas=sigmas, opacities=opacities, viewmats=viewmats, Ks=Ks),
                      dict(vertices=(N, 3, 3), sigmas=(N,), opacities=(N,), viewmats=(C, 4, 4), Ks=(C, 3, 3)))
        out = _Project.apply(vertices, sigmas, opacities, viewmats, Ks, int(width), int(height), float(near),
                             float(far))
        return TriangleProjection(*out)

    def rasterize_triangles(verts2d, sigmas, colors, opacities, depths, bounds, radii, width, height, tile_size=16):
        """Front-to-back compositing of projected triangles in tiles.

        verts2d (C,N,3,2), sigmas (C,N), colors (C,N,3), opacities (C,N), depths (C,N), bounds (C,N,4),
        radii (C,N,2). Returns feats (C,H,W,4) = [sum w rgb, sum w z], alphas (C,H,W,1), max_weight (C,N).
        """
        C, N = verts2d.shape[:2]
        check_tensors(kind, dict(verts2d=verts2d, sigmas=sigmas, colors=colors, opacities=opacities, depths=depths,
                                 bounds=bounds, radii=radii),
                      dict(verts2d=(C, N, 3, 2), sigmas=(C, N), colors=(C, N, 3), opacities=(C, N), depths=(C, N),
                           bounds=(C, N, 4), radii=(C, N, 2)))
        if int(tile_size) <= 0 or int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width, height and tile_size must be positive; got {width}, {height}, {tile_size}")
        return _Rasterize.apply(verts2d, sigmas, colors, opacities, depths, bounds, radii, int(width), int(height),
                                int(tile_size))

    return project_triangles, rasterize_triangles
