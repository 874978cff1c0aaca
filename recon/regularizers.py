"""Sparse-view regularizers that need no learned weights.

- DropGaussian (Park et al. 2025): each step a random fraction of the Gaussians is dropped and the
  survivors' opacities are scaled by 1 / (1 - rate), so Gaussians far from the training rays still get
  gradients and the scene does not overfit a few views.
- Binocular consistency (Han et al. 2024): render a virtual camera shifted sideways from a training camera,
  warp that render back into the training view with the training view's rendered depth, and compare it
  with the training photo. Wrong depth or wrong novel-view colour both raise the loss.
- Stereo depth: the rendered depth of a training view against the plane-sweep stereo depth that passed the
  initializer's cross-view checks (relative L1 where it is known), as sparse-depth supervision in
  DS-NeRF / depth-regularized 3DGS, but dense and from the training photos alone.
- Background transparency: where a photo shows the render's background colour (a scan's black backdrop,
  Blender's white), the simplest explanation is no primitive at all; alpha there is pushed towards 0, so
  primitives painted over the backdrop for the training views do not hover over the object in other views.
- Depth smoothness: the rendered depth of a training view should vary smoothly where the photo does (edge-aware
  first-order smoothness, as in self-supervised monocular depth). Few views leave each primitive free to sit
  anywhere along its training rays; the photos cannot tell, but every other viewpoint sees the scatter as a
  shattered surface and as floaters.
- Multi-view photo-consistency: the other training photos, warped into a training view through its rendered
  depth, must match the view's photo patch by patch (NCC, the score multi-view stereo maximizes; PGSR and
  MVS-regularized splatting train with it). Unlike smoothness it asks only what the photos can tell: where a
  patch has texture, the depth the photos agree on; flat patches are left alone.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F

from sparsesplat.rasterizer import Cameras

from .patches import box_mean, grey, patch_ncc


def drop_primitives(prims, rate: float, generator: torch.Generator):
    """DropGaussian for any primitive kind: zero the opacity of a random ``rate`` fraction and rescale the
    rest by 1/(1-rate). Returns a shallow copy; the other fields are shared, so gradients flow as before."""
    if rate <= 0:
        return prims
    keep = (torch.rand(len(prims), generator=generator) >= rate).to(prims.opacities)
    out = copy.copy(prims)
    out.opacities = prims.opacities * keep / (1 - rate)
    return out


def shifted_camera(cams: Cameras, baseline: float, direction: tuple[float, float] = (1.0, 0.0)) -> Cameras:
    """The cameras moved by ``baseline`` along ``direction`` (a unit vector (dx, dy) in their own image plane:
    (1, 0) their x axis, a stereo partner to the right if ``baseline`` > 0; (0, 1) their y axis, downwards)."""
    shift = torch.eye(4, dtype=cams.viewmats.dtype, device=cams.viewmats.device)
    if direction[0] != 0:
        shift[0, 3] = -baseline * direction[0]  # x_cam' = x_cam - b dx
    if direction[1] != 0:
        shift[1, 3] = -baseline * direction[1]  # y_cam' = y_cam - b dy
    return Cameras(shift @ cams.viewmats, cams.Ks, cams.width, cams.height)


def warp_from_shifted(shifted_img: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, baseline: float,
                      direction: tuple[float, float] = (1.0, 0.0)):
    """Warp the image seen by the shifted camera (``shifted_camera`` with the same baseline and direction) back
    into the reference view.

    shifted_img (H,W,C); depth (H,W,1) reference-view z; K (3,3). A reference pixel (u, v) with depth z sees the
    same point at (u - fx b dx / z, v - fy b dy / z) in the shifted view (the same row for a sideways shift).
    Returns the warped image (H,W,C) and a validity mask (H,W,1) of pixels whose source lies inside the image
    with depth > 0.
    """
    H, W = depth.shape[:2]
    z = depth[..., 0]
    ok = z > 1e-6
    zc, zero = z.clamp_min(1e-6), torch.zeros_like(z)
    cols = torch.arange(W, dtype=depth.dtype, device=depth.device)[None, :] + 0.5  # pixel centres
    rows = torch.arange(H, dtype=depth.dtype, device=depth.device)[:, None].expand(H, W) + 0.5
    inside = ok
    if direction[0] != 0:
        cols = cols - torch.where(ok, K[0, 0] * (baseline * direction[0]) / zc, zero)
        inside = inside & (cols >= 0.5) & (cols <= W - 0.5)
    if direction[1] != 0:
        rows = rows - torch.where(ok, K[1, 1] * (baseline * direction[1]) / zc, zero)
        inside = inside & (rows >= 0.5) & (rows <= H - 0.5)
    grid = torch.stack([cols.expand(H, W) / W * 2 - 1, rows / H * 2 - 1], dim=-1)[None]  # align_corners=False
    warped = F.grid_sample(shifted_img.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)[0].permute(1, 2, 0)
    return warped, inside[..., None].to(warped.dtype)


def stereo_depth_loss(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean relative depth error |d - t| / t over the pixels where ``target`` (H,W,1) is known (> 0);
    ``rendered`` (H,W,1) is the expected depth. Zero (with a gradient path) where nothing is known."""
    known = target > 0
    if not bool(known.any()):
        return rendered.sum() * 0.0
    t = target[known]
    return ((rendered[known] - t).abs() / t).mean()


def _distance_to_background(photo: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Largest per-channel difference (H,W,1) between a photo (H,W,3) and the background colour (3,)."""
    return (photo - background.to(photo).view(1, 1, 3)).abs().amax(dim=-1, keepdim=True)


def background_alpha_loss(alpha: torch.Tensor, photo: torch.Tensor, background: torch.Tensor,
                          tolerance: float) -> torch.Tensor:
    """Mean of alpha (H,W,1) weighted by how close the photo (H,W,3) is to the background colour (3,): weight
    1 at the colour itself, falling linearly to 0 at a per-channel difference of ``tolerance``."""
    weight = (1 - _distance_to_background(photo, background) / tolerance).clamp_min(0)
    return (weight * alpha).mean()


def backdrop_weights(photo: torch.Tensor, background: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Which pixels of a photo (H,W,3) are backdrop, (H,W,1) 0/1: those within ``tolerance`` (per channel) of
    the background colour, in regions of such pixels that reach the photo's border (a scan's black backdrop,
    Blender's white surround). A dark handle or a white label inside the object is not taken for backdrop,
    however close its colour."""
    from scipy import ndimage

    near = (_distance_to_background(photo, background)[..., 0] < tolerance).cpu().numpy()
    labels, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    reaches_border = torch.from_numpy(np.isin(labels, edge[edge > 0])).to(photo.device)
    return reaches_border.to(photo.dtype)[..., None]


def textureless(photo: torch.Tensor, scale: float, window: int = 5) -> torch.Tensor:
    """How textureless each pixel of a photo (H,W,3) in [0, 1] is, (H,W) in (0, 1]: exp(-t / scale), t the mean
    over a ``window`` x ``window`` box of the pixels' largest colour step to a neighbour (channel mean). A flat,
    saturated or featureless patch (a white table, a clear wall) gives about 1, where the photos cannot place a
    surface; a textured one about 0, where they can."""
    steps = photo.new_zeros(photo.shape[:2])
    dy = torch.diff(photo, dim=0).abs().mean(-1)
    dx = torch.diff(photo, dim=1).abs().mean(-1)
    steps[:-1] = torch.maximum(steps[:-1], dy)
    steps[1:] = torch.maximum(steps[1:], dy)
    steps[:, :-1] = torch.maximum(steps[:, :-1], dx)
    steps[:, 1:] = torch.maximum(steps[:, 1:], dx)
    return torch.exp(-box_mean(steps, window) / scale)


def depth_smoothness_loss(depth: torch.Tensor, alpha: torch.Tensor, photo: torch.Tensor,
                          edge_scale: float = 10.0, order: int = 1, free=None) -> torch.Tensor:
    """Edge-aware smoothness of the expected depth (H,W,1), relative to the view's mean depth (so it is
    scale-invariant): the mean absolute first (``order`` 1: flat surfaces cost nothing) or second difference
    (``order`` 2: any plane costs nothing) along rows and columns, each weighted by exp(-edge_scale * the
    largest photo step it spans) (photo (H,W,3) in [0, 1]) and by the smallest (detached) alpha it spans, so
    depth may jump at image edges and where nothing is drawn. ``free`` (H,W) in [0, 1], optional: how much each
    pixel is smoothed (a step counts with the largest value of the pixels it spans). The sum is normalized by the
    steps' weights without ``free``, so a gate only ever lowers a step's weight: gating most of a view away does
    not make the rest weigh more."""
    if order not in (1, 2):
        raise ValueError(f"depth smoothness order must be 1 or 2, got {order}")
    a = alpha.detach()[..., 0]
    drawn = (a > 0.5).to(depth.dtype)
    count = drawn.sum()
    if not bool(count > 0):
        return depth.sum() * 0.0
    # divided by the mean over the drawn pixels itself, not a detached copy: moving the whole view nearer must not
    # lower the loss (a masked sum: indexing by the mask costs more than the rest of the loss)
    d = depth[..., 0] / ((depth[..., 0] * drawn).sum() / count).clamp_min(1e-6)
    loss, weight = depth.new_zeros(()), depth.new_zeros(())
    for dim in (0, 1):
        n = d.shape[dim] - order
        if n <= 0:
            continue
        diff = torch.diff(d, n=order, dim=dim)
        steps = torch.diff(photo, dim=dim).abs().mean(-1)
        edge = functools.reduce(torch.maximum, (steps.narrow(dim, j, n) for j in range(order)))
        cover = functools.reduce(torch.minimum, (a.narrow(dim, j, n) for j in range(order + 1)))
        w = torch.exp(-edge_scale * edge) * cover
        weight = weight + w.sum()
        if free is not None:
            w = w * functools.reduce(torch.maximum, (free.narrow(dim, j, n) for j in range(order + 1)))
        loss = loss + (w * diff.abs()).sum()
    return loss / weight.clamp_min(1.0)


def warp_by_depth(src_img: torch.Tensor, depth: torch.Tensor, K_ref: torch.Tensor, viewmat_ref: torch.Tensor,
                  K_src: torch.Tensor, viewmat_src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source photo (H',W',C) resampled onto the reference view's pixels through the reference depth
    (H,W,1) (z in the reference camera): pixel p sees the point K_ref^-1 p * z, which the source camera sees at
    K_src (R_src X + t_src). Bilinear; differentiable in the depth. Returns (H,W,C) and (H,W) validity (depth
    > 0, in front of the source camera, inside its image)."""
    H, W = depth.shape[:2]
    Hs, Ws = src_img.shape[:2]
    dt = depth.dtype
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dt, device=depth.device) + 0.5,
                            torch.arange(W, dtype=dt, device=depth.device) + 0.5, indexing="ij")
    rays = torch.stack([(xs - K_ref[0, 2]) / K_ref[0, 0], (ys - K_ref[1, 2]) / K_ref[1, 1], torch.ones_like(xs)], -1)
    # source camera <- reference camera: X_s = R_s R_r^T (X_r - t_r) + t_s
    R = viewmat_src[:3, :3] @ viewmat_ref[:3, :3].T
    t = viewmat_src[:3, 3] - R @ viewmat_ref[:3, 3]
    X = (rays * depth) @ R.T.to(dt) + t.to(dt)
    z = X[..., 2]
    zs = torch.where(z > 1e-6, z, torch.ones_like(z))
    u = K_src[0, 0] * X[..., 0] / zs + K_src[0, 2]
    v = K_src[1, 1] * X[..., 1] / zs + K_src[1, 2]
    valid = (depth[..., 0] > 0) & (z > 1e-6) & (u >= 0) & (u <= Ws) & (v >= 0) & (v <= Hs)
    grid = torch.stack([u / Ws * 2 - 1, v / Hs * 2 - 1], -1)[None]
    warped = F.grid_sample(src_img.permute(2, 0, 1)[None].to(dt), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[0].permute(1, 2, 0)
    return warped, valid


def multiview_cost(depth: torch.Tensor, photo: torch.Tensor, sources, window: int = 7,
                   min_texture: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel (H,W): how badly the other training photos agree with a view's depth, (1 - NCC) / 2 of the best
    source in [0, 1], and where that is known (the patch is textured, grey std > ``min_texture``: a flat
    patch cannot tell depths apart; and some source sees the point).

    depth (H,W,1): the view's expected depth (render mode ED); photo (H,W,3); sources: sequence of
    (src_photo (H',W',3), K_ref, viewmat_ref, K_src, viewmat_src). Each source photo is warped into the view
    through the depth and compared by patch NCC (so exposure and a little shading do not matter); the best
    source counts (the others may be occluded there). Differentiable in the depth only."""
    ref = grey(photo)
    best = None
    for src, K_ref, V_ref, K_src, V_src in sources:
        warped, valid = warp_by_depth(src, depth, K_ref, V_ref, K_src, V_src)
        ncc, texture = patch_ncc(ref, grey(warped), window)
        cost = torch.where(valid & (texture > min_texture), (1 - ncc.clamp(-1, 1)) / 2, torch.full_like(ncc, 2.0))
        best = cost if best is None else torch.minimum(best, cost)
    if best is None:
        return depth.new_ones(depth.shape[:2]), torch.zeros(depth.shape[:2], dtype=torch.bool, device=depth.device)
    known = best < 2.0
    return torch.where(known, best, torch.ones_like(best)), known


def inconsistency(depth: torch.Tensor, photo: torch.Tensor, sources, window: int = 7) -> torch.Tensor:
    """(H,W) in [0, 1]: 0 where the other photos confirm the view's depth (NCC 1), 1 where they contradict it
    (NCC <= 0) or cannot tell (flat patch, no source sees it); no gradient."""
    with torch.no_grad():
        cost, _ = multiview_cost(depth.detach(), photo, sources, window)
        return (2 * cost).clamp(0, 1)


def multiview_photo_loss(depth: torch.Tensor, alpha: torch.Tensor, photo: torch.Tensor, sources, window: int = 7,
                         min_texture: float = 0.01) -> torch.Tensor:
    """Photo-consistency of a training view's rendered depth with the other training photos (as multi-view
    stereo scores a depth, and PGSR / MVS-regularized splatting train one): the mean ``multiview_cost`` over
    the pixels where it is known and that are drawn (alpha (H,W,1) > 0.5). The photos are constants: only the
    depth gets a gradient."""
    cost, known = multiview_cost(depth, photo, sources, window, min_texture)
    use = known & (alpha.detach()[..., 0] > 0.5)
    if not bool(use.any()):
        return depth.sum() * 0.0
    return cost[use].mean()
