"""The Gaussian stages through gsplat's CUDA kernels (the ``gsplat`` backend), a peer of our own ``cuda`` ones.

Conventions already agree (OpenCV cameras, world->camera viewmats, pixel centres at +0.5, eps2d 0.3,
opacity-aware bounds, 1/255 skip, 1e-4 transmittance stop; gsplat stops at ``<=`` where the contract says
``<``, which differs only on a measure-zero set). gsplat does not report per-primitive blending weights, so
``max_weight`` here is the upper bound min(0.99, effective opacity) for visible Gaussians.
"""

from __future__ import annotations

import math

import torch

from .torch_stages import Projection


def project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                      eps2d=0.3, near=0.01, far=1e10, antialiased=False) -> Projection:
    from gsplat.cuda._wrapper import fully_fused_projection

    radii, means2d, depths, conics, comp = fully_fused_projection(
        means, None, quats, scales, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near,
        far_plane=far, calc_compensations=antialiased, opacities=opacities,
    )
    opac = opacities[None].expand_as(depths)
    if antialiased:
        opac = opac * comp
    vis = (radii > 0).all(-1)
    return Projection(means2d=means2d, conics=conics, depths=depths, opacities=opac * vis, radii=radii.int())


def rasterize(means2d, conics, colors, opacities, depths, radii, width, height, tile_size=16):
    from gsplat.cuda._wrapper import isect_offset_encode, isect_tiles, rasterize_to_pixels

    C = means2d.shape[0]
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, tile_size, tw, th)
    offsets = isect_offset_encode(isect_ids, C, tw, th)
    feats = torch.cat([colors, depths[..., None]], dim=-1)
    out, alphas = rasterize_to_pixels(means2d, conics, feats, opacities, width, height, tile_size, offsets, flatten_ids)
    max_weight = (opacities.detach().clamp(max=0.99) * (radii > 0).all(-1)).to(means2d.dtype)
    return out, alphas, max_weight
