"""Convexes on the CUDA backend (skipped without a GPU): held to the torch oracle (images, meta and every
gradient), float64 finite differences, and degenerate inputs that must never produce NaN."""

from __future__ import annotations

import pytest
import torch

from sparsesplat.rasterizer import Cameras, Convexes, render

from convex_scenes import random_convexes
from scenes import orbit_cameras

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_ok():
    from sparsesplat.rasterizer.build import BackendUnavailable, load_extension

    try:
        load_extension("cuda")
    except BackendUnavailable as exc:
        pytest.skip(f"the CUDA backend cannot be built here: {str(exc).splitlines()[0]}")
    return True


def _to(cv: Convexes, device) -> Convexes:
    return Convexes(cv.points.to(device), cv.delta.to(device), cv.sigma.to(device), cv.opacities.to(device),
                    sh=cv.sh.to(device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_torch(cuda_ok, dtype):
    cams = orbit_cameras(2, 80, 60, dtype=dtype)
    cv = random_convexes(150, seed=9, sh_degree=1, dtype=dtype)
    w = torch.randn(2, 60, 80, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)
    res = {}
    for backend, dev in (("torch", "cpu"), ("cuda", "cuda")):
        c = _to(cv, dev)
        params = [t.clone().requires_grad_(True) for t in (c.points, c.delta, c.sigma, c.opacities, c.sh)]
        out = render(Convexes(*params[:4], sh=params[4]), cams.to(dev), backend=backend)
        loss = (torch.cat([out.colors, out.alphas, out.depths], -1) * w.to(dev)).sum()
        loss.backward()
        res[backend] = (out, [p.grad.cpu() for p in params] + [out.meta.means2d.grad.cpu()])
    (a, ga), (b, gb) = res["torch"], res["cuda"]
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert (a.colors - b.colors.cpu()).abs().max() < tol
    assert (a.alphas - b.alphas.cpu()).abs().max() < tol
    assert torch.equal(a.meta.radii, b.meta.radii.cpu())
    assert (a.meta.max_weight - b.meta.max_weight.cpu()).abs().max() < tol
    for x, y in zip(ga, gb):
        assert torch.isfinite(y).all()
        assert ((x - y).abs().max() / x.abs().max().clamp_min(1e-6)) < (2e-3 if dtype == torch.float32 else 1e-7)


def test_cuda_gradcheck(cuda_ok):
    cams = orbit_cameras(2, 20, 16, dtype=torch.float64).to("cuda")
    cv = _to(random_convexes(3, seed=11, hard_cases=False, size=0.8, dtype=torch.float64), "cuda")
    bg = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64, device="cuda")
    w = torch.randn(2, 16, 20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).cuda()

    def f(points, delta, sigma, opac, sh, viewmats):
        out = render(Convexes(points, delta, sigma, opac, sh=sh), Cameras(viewmats, cams.Ks, 20, 16),
                     backend="cuda", background=bg)
        return (torch.cat([out.colors, out.alphas, out.depths], -1) * w).sum()

    args = [t.clone().requires_grad_(True) for t in (cv.points, cv.delta, cv.sigma, cv.opacities, cv.sh, cams.viewmats)]
    # atomics make the summation order (and the last bits) vary between runs
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-3, nondet_tol=1e-10)


def test_cuda_degenerate_inputs_stay_finite(cuda_ok):
    cams = orbit_cameras(2, 64, 48).to("cuda")
    cv = _to(random_convexes(60, seed=4), "cuda")  # collinear, coincident, NaN, far-out cases included
    params = [t.clone().requires_grad_(True) for t in (cv.points, cv.delta, cv.sigma, cv.opacities, cv.sh)]
    out = render(Convexes(*params[:4], sh=params[4]), cams, backend="cuda")
    assert torch.isfinite(out.colors).all() and torch.isfinite(out.alphas).all()
    out.colors.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in params)
