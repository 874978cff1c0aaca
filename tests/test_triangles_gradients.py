"""Triangle gradients: every parameter against float64 central finite differences (torch autograd and the
compiled backends' analytic backward), and the backends against each other on a larger scene."""

from __future__ import annotations

import pytest
import torch

from sparsesplat.rasterizer import Cameras, Triangles, render
from sparsesplat.rasterizer.backends import is_available

from finite_differences import assert_matches_finite_differences
from scenes import orbit_cameras

NAMES = ["vertices", "sigma", "opacities", "sh", "viewmats"]


def _small_scene(seed=0, n=5, sh_degree=1):
    """A few well-conditioned triangles in front of the cameras (sigma away from 0 so K is smooth)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n, 1, 3, generator=g, dtype=torch.float64) * 0.4
    verts = centers + torch.randn(n, 3, 3, generator=g, dtype=torch.float64) * 0.5
    sigma = torch.rand(n, generator=g, dtype=torch.float64) * 1.5 + 0.6
    opac = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.3
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.3
    return [verts, sigma, opac, sh]


def _loss_fn(backend, Ks, width, height):
    w = torch.linspace(0.5, 1.5, width * height * 3, dtype=torch.float64).reshape(height, width, 3)

    def loss(verts, sigma, opac, sh, viewmats):
        cams = Cameras(viewmats, Ks, width, height)
        out = render(Triangles(verts, sigma, opac, sh=sh), cams, backend=backend, background=(0.3, 0.3, 0.3))
        return (out.colors * w).sum() + 0.1 * (out.depths * out.alphas).sum() + 0.5 * out.alphas.sum()

    return loss


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_gradients_match_finite_differences(backend):
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} is not available here")
    W, H = 24, 20
    cams = orbit_cameras(2, W, H, radius=3.0, dtype=torch.float64)
    f = _loss_fn(backend, cams.Ks, W, H)
    assert_matches_finite_differences(f, [*_small_scene(), cams.viewmats], NAMES, f"{backend} ")
