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


class TriangleProjection(NamedTuple):
    """Per (camera, triangle) screen-space values; culled entries have radii == 0 and zeros elsewhere.

    verts2d (C,N,3,2) pixels; depths (C,N) view depth of the centroid; means2d (C,N,2) projected centroid
    (no gradient); bounds (C,N,4) [xmin, ymin, xmax, ymax] pixel box holding every pixel centre where alpha
    can reach 1/255; radii (C,N,2) int32 per-axis extent of that box around means2d.
    """

    verts2d: torch.Tensor
    depths: torch.Tensor
    means2d: torch.Tensor
    bounds: torch.Tensor
    radii: torch.Tensor
