"""Repair of novel-view renders: ``repair(render, references, cameras) -> image``.

- ``SceneRepairer``: a small U-Net trained per scene on the scene's own degraded/clean pairs (no downloaded
  weights), as in GaussianObject's repair idea.
- ``DiffusionRepairer``: a single-step diffusers image-to-image model (SD-Turbo / Difix style) from a local
  folder or a hub id; diffusers is imported only when one is built.

May import only ``sparsesplat.rasterizer`` (and torch, numpy; diffusers lazily).
"""

from .base import Repairer, nearest_views
from .diffusion import DiffusionRepairer
from .scene import SceneRepairer, UNet

__all__ = ["DiffusionRepairer", "Repairer", "SceneRepairer", "UNet", "nearest_views"]
