"""Random Gaussian scenes for rasterizer tests, with the hard cases the contract names."""

from __future__ import annotations

import torch

from sparsesplat.rasterizer import Cameras, Gaussians
from sparsesplat.rasterizer.cameras import intrinsics, look_at


def orbit_cameras(n: int, width: int, height: int, radius: float = 5.0, dtype=torch.float32) -> Cameras:
    """n cameras on a circle around the origin, looking at it, with a slightly off-centre principal point."""
    views, Ks = [], []
    f = 0.9 * max(width, height)
    for k in range(n):
        a = 2 * torch.pi * k / max(n, 1) + 0.3
        eye = [radius * float(torch.cos(torch.tensor(a))), radius * float(torch.sin(torch.tensor(a))), 1.0 + 0.3 * k]
        views.append(look_at(eye, [0.0, 0.0, 0.0]))
        Ks.append(intrinsics(f, f * 1.05, 0.48 * width, 0.53 * height))
    return Cameras(torch.stack(views).to(dtype), torch.stack(Ks).to(dtype), width, height)


def random_gaussians(n: int, seed: int = 0, hard_cases: bool = True, sh_degree: int = 0, dtype=torch.float32) -> Gaussians:
    """n Gaussians in a unit-ish cube; with hard_cases, some are huge, tiny, near-transparent, far off-screen,
    or behind the cameras (outside the orbit)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.2
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.6 - 2.6)
    # keep larger scenes from saturating every pixel, so compositing order and thresholds stay visible
    top = 0.9 if n <= 100 else 0.45
    opac = torch.rand(n, generator=g, dtype=torch.float64) * top + 0.05
    if hard_cases and n >= 10:
        k = max(1, n // 10)
        idx = torch.randperm(n, generator=g)
        scales[idx[: max(1, k // 4)]] *= 12.0  # huge
        scales[idx[k : 2 * k]] *= 0.02  # tiny (sub-pixel)
        opac[idx[2 * k : 3 * k]] = torch.rand(k, generator=g, dtype=torch.float64) * 0.01  # near-transparent
        means[idx[3 * k : 4 * k]] *= 6.0  # far out: off-screen, partly visible or behind cameras
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.4
    return Gaussians(means.to(dtype), quats.to(dtype), scales.to(dtype), opac.to(dtype), sh=sh.to(dtype))
