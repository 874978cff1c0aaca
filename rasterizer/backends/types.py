"""Types shared by the backends' stage functions."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Projection(NamedTuple):
    """Per (camera, primitive) screen-space values; culled entries have radii == 0.

    means2d (C,N,2) pixels; conics (C,N,3) [a,b,c] of the inverse 2D covariance [[a,b],[b,c]];
    depths (C,N) view-space z; opacities (C,N) effective opacity; radii (C,N,2) int32 per-axis bounds.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    radii: torch.Tensor
