"""Things that move between photos (people, cars, a shadow): keep them out of the scene.

A moving object is in one photo and not the others, so once the scene has formed its region keeps an error
far above the rest of the photo, over a blob rather than along edges. ``transient_inliers`` finds such
regions per photo and step (in the spirit of RobustNeRF's trimmed, spatially smoothed loss): the per-pixel
error, averaged over a 5x5 window, counts as an outlier where it exceeds the photo's median by more than
``spread`` robust standard deviations (and an absolute floor); outliers along thin lines (edges the scene has
not resolved yet) are dropped by requiring 70% of a 9x9 window to agree, which also erodes a region by about 2
pixels, and the regions kept out are then grown by 4 pixels, so they cover their borders.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

SMOOTH = 5
REGION = 9
REGION_FRACTION = 0.7
GROW = 9
SPREAD = 4.0
FLOOR = 0.05


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k x k windows of an (H, W) map, same size (replicated borders)."""
    x = F.pad(x[None, None], (k // 2,) * 4, mode="replicate")
    return F.avg_pool2d(x, k, stride=1)[0, 0]


def transient_inliers(render: torch.Tensor, photo: torch.Tensor, keep: Optional[torch.Tensor] = None,
                      spread: float = SPREAD, floor: float = FLOOR) -> torch.Tensor:
    """(H, W, 1) float: 1 where the pixel belongs in the loss, 0 in a transient region. render, photo:
    (H, W, 3); keep: (H, W, 1) pixels that count at all (a user mask), or None."""
    with torch.no_grad():
        err = _box((render - photo).abs().mean(dim=-1), SMOOTH)
        valid = err.new_ones(err.shape, dtype=torch.bool) if keep is None else keep[..., 0] > 0.5
        vals = err[valid] if bool(valid.any()) else err.reshape(-1)
        med = vals.median()
        mad = (vals - med).abs().median()
        thresh = torch.maximum(med + spread * 1.4826 * mad, med.new_tensor(floor))
        out = (err > thresh).float()
        out = (_box(out, REGION) > REGION_FRACTION).float()  # regions, not edges
        out = (F.max_pool2d(out[None, None], GROW, stride=1, padding=GROW // 2)[0, 0] > 0).float()
        return (1.0 - out)[..., None]
