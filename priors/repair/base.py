"""The repair interface shared by every repairer, and reference-view selection."""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch

from sparsesplat.rasterizer import Cameras


@runtime_checkable
class Repairer(Protocol):
    """Turns renders of poorly observed views into plausible photos of the same views."""

    name: str

    def repair(self, render: torch.Tensor, references: Optional[torch.Tensor] = None,
               cameras: Optional[Cameras] = None) -> torch.Tensor:
        """render (B,H,W,3) in [0,1]; references (B,H,W,3): for each render a real photo of a nearby view
        (or None); cameras: the renders' cameras (or None). Returns (B,H,W,3) in [0,1]."""
        ...


def nearest_views(cameras: Cameras, pool: Cameras) -> torch.Tensor:
    """(B,) index into ``pool`` of the camera nearest to each of ``cameras``: centre distance plus a
    penalty for viewing-direction disagreement (1 - cos), both in scene units."""
    c, p = cameras.centers, pool.centers.to(cameras.centers)
    dist = torch.cdist(c, p)
    fwd_c = cameras.viewmats[:, 2, :3]  # camera z axis (forward) in world coordinates
    fwd_p = pool.viewmats[:, 2, :3].to(fwd_c)
    angle = 1 - fwd_c @ fwd_p.T
    scale = dist.max().clamp_min(1e-6)
    return (dist + scale * angle).argmin(dim=1)
