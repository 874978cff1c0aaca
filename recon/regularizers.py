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
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from sparsesplat.rasterizer import Cameras


def drop_primitives(prims, rate: float, generator: torch.Generator):
    """DropGaussian for any primitive kind: zero the opacity of a random ``rate`` fraction and rescale the
    rest by 1/(1-rate). Returns a shallow copy; the other fields are shared, so gradients flow as before."""
    if rate <= 0:
        return prims
    keep = (torch.rand(len(prims), generator=generator) >= rate).to(prims.opacities)
    out = copy.copy(prims)
    out.opacities = prims.opacities * keep / (1 - rate)
    return out


def shifted_camera(cams: Cameras, baseline: float) -> Cameras:
    """The cameras moved by ``baseline`` along their own x axis (a stereo partner to the right if > 0)."""
    shift = torch.eye(4, dtype=cams.viewmats.dtype, device=cams.viewmats.device)
    shift[0, 3] = -baseline  # x_cam' = x_cam - b
    return Cameras(shift @ cams.viewmats, cams.Ks, cams.width, cams.height)


def warp_from_shifted(shifted_img: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, baseline: float):
    """Warp the image seen by the shifted camera back into the reference view.

    shifted_img (H,W,3); depth (H,W,1) reference-view z; K (3,3). A reference pixel at column u with depth
    z sees the same point at column u - fx * b / z in the shifted view (same row). Returns the warped
    image (H,W,3) and a validity mask (H,W,1) of pixels whose source lies inside the image with depth > 0.
    """
    H, W = depth.shape[:2]
    fx = K[0, 0]
    z = depth[..., 0]
    ok = z > 1e-6
    disparity = torch.where(ok, fx * baseline / z.clamp_min(1e-6), torch.zeros_like(z))
    cols = torch.arange(W, dtype=depth.dtype, device=depth.device)[None, :] + 0.5 - disparity  # pixel centres
    rows = torch.arange(H, dtype=depth.dtype, device=depth.device)[:, None].expand(H, W) + 0.5
    grid = torch.stack([cols / W * 2 - 1, rows / H * 2 - 1], dim=-1)[None]  # align_corners=False convention
    warped = F.grid_sample(shifted_img.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)[0].permute(1, 2, 0)
    inside = ok & (cols >= 0.5) & (cols <= W - 0.5)
    return warped, inside[..., None].to(warped.dtype)


def stereo_depth_loss(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean relative depth error |d - t| / t over the pixels where ``target`` (H,W,1) is known (> 0);
    ``rendered`` (H,W,1) is the expected depth. Zero (with a gradient path) where nothing is known."""
    known = target > 0
    if not bool(known.any()):
        return rendered.sum() * 0.0
    t = target[known]
    return ((rendered[known] - t).abs() / t).mean()


def background_alpha_loss(alpha: torch.Tensor, photo: torch.Tensor, background: torch.Tensor,
                          tolerance: float) -> torch.Tensor:
    """Mean of alpha (H,W,1) weighted by how close the photo (H,W,3) is to the background colour (3,): weight
    1 at the colour itself, falling linearly to 0 at a per-channel difference of ``tolerance``."""
    diff = (photo - background.to(photo).view(1, 1, 3)).abs().amax(dim=-1, keepdim=True)
    weight = (1 - diff / tolerance).clamp_min(0)
    return (weight * alpha).mean()
