"""Convex scenes for the rasterizer speed benchmark (``benchmarks/rasterizer.py --primitive convex``).

The same points, colours and sizes as the benchmark's Gaussians (``make_gaussians``: surface samples of the
procedural orbit scene, size = mean distance to the 3 nearest neighbours), each turned into a convex of P = 6
points on a randomly rotated Fibonacci sphere of that radius (the 3D Convex Splatting initialization), with
delta and sigma chosen so edges are about 2 pixels soft at the benchmark cameras (focal ~1.07 W, depth ~4).
"""

from __future__ import annotations

import numpy as np
import torch


def make_convexes(n: int, width: int, seed: int = 0, device="cpu", P: int = 6):
    from sparsesplat.rasterizer import Convexes
    from sparsesplat.rasterizer.quaternions import quat_to_rotmat
    from sparsesplat.recon.convex_model import fibonacci_sphere

    from .rasterizer import make_gaussians

    g = make_gaussians(n, seed=seed)
    r = g.scales.mean(dim=1)  # (N,)
    dirs = torch.as_tensor(fibonacci_sphere(P) - fibonacci_sphere(P).mean(0), dtype=torch.float32)
    R = quat_to_rotmat(torch.nn.functional.normalize(g.quats, dim=-1))  # random orientations
    points = g.means[:, None, :] + r[:, None, None] * torch.einsum("nij,pj->npi", R, dirs)
    focal = 0.5 * width / np.tan(np.radians(25.0))
    delta = 2.0 / (focal * r)
    sigma = torch.full((n,), 0.25)
    cv = Convexes(points, delta, sigma, g.opacities, sh=g.sh)
    return Convexes(*(t.to(device) for t in (cv.points, cv.delta, cv.sigma, cv.opacities)), sh=cv.sh.to(device))
