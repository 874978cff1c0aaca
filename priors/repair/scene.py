"""A per-scene repair network: a small U-Net trained on the scene's own degraded/clean pairs.

Sparse-view renders of unseen viewpoints fail in scene-specific ways (floaters, holes, blur, wrong colours
at the borders). GaussianObject's observation: renders of a *training* view made by a model that did not
see it (leave-one-out) fail the same way, and the photo of that view is the clean target. The pairs are
made by the caller (``recon`` trains the leave-one-out models; this module does not know about training):
``SceneRepairer.fit(degraded, clean)`` then learns the map, and ``repair`` applies it to novel views.

The network predicts a residual on top of its input and its last layer starts at zero, so an untrained
or barely trained repairer is the identity rather than a source of noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.fileio import atomic_path


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))


class UNet(nn.Module):
    """U-Net on (B,3,H,W) images: out = x + residual(x), ``levels`` resolutions (channels x2 per level; the
    receptive field roughly doubles with each: ~40 px at 3 levels, ~90 px at 4). Any H, W (padded)."""

    def __init__(self, width: int = 16, levels: int = 3):
        super().__init__()
        if levels < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got {levels}")
        chans = [width * 2 ** k for k in range(levels)]
        self.levels = levels
        self.enc = nn.ModuleList([_block(3 if k == 0 else chans[k - 1], chans[k]) for k in range(levels)])
        self.dec = nn.ModuleList([_block(chans[k + 1] + chans[k], chans[k]) for k in range(levels - 1)])
        self.out = nn.Conv2d(width, 3, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        ph, pw = (-H) % m, (-W) % m
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
        skips, h = [], xp
        for k, enc in enumerate(self.enc):
            h = enc(h if k == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        for k in range(self.levels - 2, -1, -1):
            up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = self.dec[k](torch.cat([up, skips[k]], 1))
        return (xp + self.out(h))[..., :H, :W]


@dataclass
class SceneRepairConfig:
    """How the per-scene repair network is trained."""

    width: int = 16
    """Channels of the first U-Net level (x2 per level)."""
    levels: int = 4
    """U-Net resolutions: 4 sees ~90 px around a pixel (3 levels, ~40 px, could not learn what a
    leave-one-out render misses on fern: its loss stayed flat)."""
    steps: int = 600
    """Adam steps on random crops of the pairs (a few minutes on 2 CPU cores)."""
    crop: int = 128
    """Side in pixels of the random crops the network trains on."""
    batch: int = 4
    """Crops per Adam step."""
    lr: float = 2e-3
    """Adam learning rate."""
    seed: int = 0
    """Random seed of the network's weights and crops."""


class SceneRepairer:
    """Repair learned from the scene's own (degraded render, photo) pairs. No downloaded weights."""

    name = "scene"

    def __init__(self, cfg: Optional[SceneRepairConfig] = None, device: str | torch.device = "cpu"):
        self.cfg = cfg or SceneRepairConfig()
        self.device = torch.device(device)
        torch.manual_seed(self.cfg.seed)
        self.net = UNet(self.cfg.width, self.cfg.levels).to(self.device)
        self.history: list[float] = []

    def _crops(self, degraded: torch.Tensor, clean: torch.Tensor, weights: torch.Tensor, g: torch.Generator):
        """A batch of random aligned crops, with random flips; pairs drawn with probability ~ weights."""
        n, H, W = degraded.shape[:3]
        s = min(self.cfg.crop, H, W)
        idx = torch.multinomial(weights, self.cfg.batch, replacement=True, generator=g)
        ys = torch.randint(0, H - s + 1, (self.cfg.batch,), generator=g)
        xs = torch.randint(0, W - s + 1, (self.cfg.batch,), generator=g)
        a = torch.stack([degraded[i, y: y + s, x: x + s] for i, y, x in zip(idx, ys, xs)])
        b = torch.stack([clean[i, y: y + s, x: x + s] for i, y, x in zip(idx, ys, xs)])
        if torch.rand(1, generator=g).item() < 0.5:
            a, b = a.flip(2), b.flip(2)
        return a.permute(0, 3, 1, 2).to(self.device), b.permute(0, 3, 1, 2).to(self.device)

    def fit(self, degraded: torch.Tensor, clean: torch.Tensor, weights: Optional[torch.Tensor] = None,
            masks: Optional[torch.Tensor] = None) -> list[float]:
        """Train on pairs: degraded, clean (N,H,W,3) in [0,1]; weights (N,) sampling weights; masks
        (N,H,W,1) where the clean target is valid (e.g. not DTU background). Returns the loss per step."""
        cfg = self.cfg
        g = torch.Generator().manual_seed(cfg.seed)
        degraded, clean = degraded.detach().float().cpu(), clean.detach().float().cpu()
        if masks is not None:  # outside the mask the target is the input itself: nothing to learn there
            clean = clean * masks.cpu() + degraded * (1 - masks.cpu())
        weights = torch.ones(len(degraded)) if weights is None else weights.float().cpu()
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / max(cfg.steps, 1))))
        self.net.train()
        for _ in range(cfg.steps):
            a, b = self._crops(degraded, clean, weights, g)
            loss = (self.net(a) - b).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            self.history.append(loss.item())
        self.net.eval()
        return self.history

    @torch.no_grad()
    def repair(self, render: torch.Tensor, references: Optional[torch.Tensor] = None,
               cameras: Optional[Cameras] = None) -> torch.Tensor:
        """render (B,H,W,3) -> repaired (B,H,W,3) in [0,1]; references and cameras are not used."""
        x = render.detach().float().to(self.device).permute(0, 3, 1, 2)
        out = torch.cat([self.net(x[i: i + 1]) for i in range(len(x))])
        return out.permute(0, 2, 3, 1).clamp(0, 1).to(render.device)

    def save(self, path: Path) -> None:
        with atomic_path(Path(path)) as tmp:
            torch.save({"cfg": self.cfg, "net": self.net.state_dict(), "history": self.history}, tmp)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> "SceneRepairer":
        state = torch.load(path, map_location="cpu", weights_only=False)
        rep = cls(state["cfg"], device)
        rep.net.load_state_dict(state["net"])
        rep.net.eval()
        rep.history = state["history"]
        return rep
