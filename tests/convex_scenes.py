"""Random convex scenes for rasterizer tests, with the degenerate cases the contract names."""

from __future__ import annotations

import torch

from sparsesplat.rasterizer import Convexes


def random_convexes(n: int, seed: int = 0, P: int = 6, hard_cases: bool = True, sh_degree: int = 0,
                    size: float = 0.35, dtype=torch.float32) -> Convexes:
    """n convexes of P points around centres in a unit-ish cube (a few pixels to tens of pixels across in
    the 64x48 orbit cameras of ``scenes.orbit_cameras``). With hard_cases: collinear points, coincident
    points, a NaN, near-transparent ones and some far out (off-screen or behind a camera)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, 1, 3, generator=g, dtype=torch.float64)
    dirs = torch.randn(n, P, 3, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True) * (0.5 + 0.5 * torch.rand(n, P, 1, generator=g, dtype=torch.float64))
    radius = size * torch.exp(0.4 * torch.randn(n, 1, 1, generator=g, dtype=torch.float64))
    points = centres + radius * dirs
    delta = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-4.0, -1.5, generator=g))
    sigma = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-2.0, 0.5, generator=g))
    opac = torch.rand(n, generator=g, dtype=torch.float64) * (0.9 if n <= 50 else 0.5) + 0.05
    if hard_cases and n >= 10:
        idx = torch.randperm(n, generator=g)
        # collinear, exactly representable in float32 so every precision sees the same degenerate set
        t = (torch.arange(P, dtype=torch.float64) - (P - 1) / 2) / 4
        line = t[:, None] * torch.tensor([0.25, -0.125, 0.0625], dtype=torch.float64)
        points[idx[0]] = torch.round(centres[idx[0]] * 64) / 64 + line
        points[idx[1]] = centres[idx[1]].expand(P, 3)  # coincident
        points[idx[2], 1, 0] = float("nan")
        opac[idx[3]] = 0.003  # never reaches alpha 1/255
        points[idx[4]] *= 6.0  # far out
        points[idx[5]] *= 6.0
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.4
    return Convexes(points.to(dtype), delta.to(dtype), sigma.to(dtype), opac.to(dtype), sh=sh.to(dtype))
