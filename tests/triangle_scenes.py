"""Random triangle scenes for rasterizer tests, with the hard cases the contract names."""

from __future__ import annotations

import torch

from sparsesplat.rasterizer import Triangles


def random_triangles(n: int, seed: int = 0, hard_cases: bool = True, sh_degree: int = 0, size: float = 0.35,
                     dtype=torch.float32) -> Triangles:
    """n triangles around the origin; with hard_cases, some are huge, tiny, near-transparent, solid
    (sigma 0), far out (off-screen or behind the orbit cameras), zero-area or collinear."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n, 1, 3, generator=g, dtype=torch.float64) * 1.0
    scale = torch.exp(torch.randn(n, 1, 1, generator=g, dtype=torch.float64) * 0.5) * size
    verts = centers + torch.randn(n, 3, 3, generator=g, dtype=torch.float64) * scale
    sigma = torch.rand(n, generator=g, dtype=torch.float64) * 2.5 + 0.1
    top = 0.9 if n <= 100 else 0.45
    opac = torch.rand(n, generator=g, dtype=torch.float64) * top + 0.05
    if hard_cases and n >= 10:
        k = max(1, n // 10)
        idx = torch.randperm(n, generator=g)
        c = centers[idx[: max(1, k // 4)]]
        verts[idx[: max(1, k // 4)]] = c + (verts[idx[: max(1, k // 4)]] - c) * 5.0  # huge
        c = centers[idx[k : 2 * k]]
        verts[idx[k : 2 * k]] = c + (verts[idx[k : 2 * k]] - c) * 0.01  # tiny
        opac[idx[2 * k : 3 * k]] = torch.rand(k, generator=g, dtype=torch.float64) * 0.01  # near-transparent
        verts[idx[3 * k : 4 * k]] *= 5.0  # far out
        sigma[idx[4 * k : 5 * k]] = 0.0  # solid
        i = idx[5 * k]
        verts[i, 2] = verts[i, 1]  # zero area
        i = idx[5 * k + 1 if k > 1 else 4 * k]
        verts[i, 2] = 0.3 * verts[i, 0] + 0.7 * verts[i, 1]  # collinear
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.4
    return Triangles(verts.to(dtype), sigma.to(dtype), opac.to(dtype), sh=sh.to(dtype))
