"""GES (generalized exponential splats, ``GeneralizedGaussians``): every backend against the independent
float64 naive renderer, beta = 2 against Gaussians, and gradients (shapes included) against float64 central
finite differences and the torch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.rasterizer import Cameras, Gaussians, GeneralizedGaussians, render
from sparsesplat.rasterizer.backends import is_available

from finite_differences import assert_matches_finite_differences
from naive_renderer import render_naive
from scenes import orbit_cameras, random_gaussians

SH_C0 = 0.28209479177387814
BACKENDS = ["torch", "cpu", "cuda"]


def _need(backend):
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} is not available on this machine (no compiler or no CUDA)")


def _ges(n: int, seed: int, low: float = 1.0, high: float = 6.0, dtype=torch.float32) -> GeneralizedGaussians:
    g = random_gaussians(n, seed=seed, hard_cases=False, dtype=dtype)
    shapes = low + (high - low) * torch.rand(n, generator=torch.Generator().manual_seed(seed + 100), dtype=dtype)
    return GeneralizedGaussians(g.means, g.quats, g.scales, g.opacities, shapes, sh=g.sh)


def _on(g: GeneralizedGaussians, dev: str) -> GeneralizedGaussians:
    return GeneralizedGaussians(g.means.to(dev), g.quats.to(dev), g.scales.to(dev), g.opacities.to(dev),
                                g.shapes.to(dev), sh=g.sh.to(dev))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ges_matches_the_naive_renderer(backend):
    _need(backend)
    dev = "cuda" if backend == "cuda" else "cpu"
    g = _ges(300, seed=3)
    cams = orbit_cameras(2, 48, 40)
    out = render(_on(g, dev), cams.to(dev), backend=backend, background=(0.2, 0.3, 0.4))
    rgb0 = np.maximum(0.0, SH_C0 * g.sh[:, 0].double().numpy() + 0.5)
    for c in range(len(cams)):
        rgb, alpha, depth = render_naive(
            g.means.double().numpy(), g.quats.double().numpy(), g.scales.double().numpy(),
            g.opacities.double().numpy(), rgb0, cams.viewmats[c].double().numpy(), cams.Ks[c].double().numpy(),
            48, 40, background=(0.2, 0.3, 0.4), shapes=g.shapes.double().numpy())
        for name, ours, ref in (("colors", out.colors[c], rgb), ("alphas", out.alphas[c, ..., 0], alpha),
                                ("depths", out.depths[c, ..., 0], depth)):
            err = np.abs(ours.detach().cpu().double().numpy() - ref)
            assert err.mean() < 1e-5, f"{backend} {name}: mean abs error {err.mean():.3g}"
            bad = (err > 1e-3).any(-1) if err.ndim == 3 else err > 1e-3
            assert bad.mean() < 2e-3, f"{backend} {name}: {bad.sum()} pixels off by > 1e-3 (max {err.max():.3g})"
    # a real GES image: the same scene drawn as Gaussians differs
    gauss = render(Gaussians(g.means, g.quats, g.scales, g.opacities, sh=g.sh), cams, backend="torch",
                   background=(0.2, 0.3, 0.4))
    assert (gauss.colors - out.colors.cpu()).abs().max() > 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_beta_two_is_the_gaussian(backend):
    _need(backend)
    dev = "cuda" if backend == "cuda" else "cpu"
    g = _ges(500, seed=4, low=2.0, high=2.0)
    cams = orbit_cameras(2, 64, 48).to(dev)
    a = render(_on(g, dev), cams, backend=backend)
    b = render(Gaussians(g.means.to(dev), g.quats.to(dev), g.scales.to(dev), g.opacities.to(dev), sh=g.sh.to(dev)),
               cams, backend=backend)
    assert torch.equal(a.meta.radii, b.meta.radii)  # (2 ln 255 o)^(1/2): the Gaussian extent below its cap
    assert (a.colors - b.colors).abs().max() < 2e-5
    assert (a.depths - b.depths).abs().max() < 1e-4


def _small_ges(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.5
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.25 + 0.1
    opac = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.3
    shapes = torch.rand(n, generator=g, dtype=torch.float64) * 3.0 + 1.2
    sh = torch.randn(n, 4, 3, generator=g, dtype=torch.float64) * 0.3
    return means, quats, scales, opac, shapes, sh


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_ges_gradients_match_finite_differences(backend):
    _need(backend)
    cams = orbit_cameras(2, 24, 20, radius=3.0, dtype=torch.float64)
    w = torch.linspace(0.5, 1.5, 24 * 20 * 3, dtype=torch.float64).reshape(20, 24, 3)

    def f(means, quats, scales, opac, shapes, sh, viewmats):
        out = render(GeneralizedGaussians(means, quats, scales, opac, shapes, sh=sh),
                     Cameras(viewmats, cams.Ks, 24, 20), backend=backend, background=(0.3, 0.3, 0.3))
        return (out.colors * w).sum() + 0.1 * (out.depths * out.alphas).sum() + 0.5 * out.alphas.sum()

    names = ["means", "quats", "scales", "opacities", "shapes", "sh", "viewmats"]
    analytic = assert_matches_finite_differences(f, [*_small_ges(), cams.viewmats], names, f"{backend} ")
    assert analytic[4].abs().max() > 1e-3  # the shapes do get a gradient


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_compiled_ges_gradients_match_torch(backend):
    _need(backend)
    g = _ges(800, seed=6, low=1.0, high=5.0)
    cams = orbit_cameras(2, 64, 64)
    grads = {}
    for b in ("torch", backend):
        dev = "cuda" if b == "cuda" else "cpu"
        params = [t.detach().clone().to(dev).requires_grad_(True)
                  for t in (g.means, g.quats, g.scales, g.opacities, g.shapes, g.sh)]
        vm = cams.viewmats.clone().to(dev).requires_grad_(True)
        out = render(GeneralizedGaussians(*params[:5], sh=params[5]), Cameras(vm, cams.Ks.to(dev), 64, 64), backend=b)
        wgt = torch.linspace(0.2, 1.0, out.colors.numel(), device=dev).reshape(out.colors.shape)
        ((out.colors * wgt).sum() + 0.05 * out.depths.sum()).backward()
        grads[b] = [p.grad.cpu() for p in params] + [vm.grad.cpu()]
    for name, gt, gc in zip(["means", "quats", "scales", "opacities", "shapes", "sh", "viewmats"], grads["torch"],
                            grads[backend]):
        scale = gt.abs().max()
        assert scale > 0, name
        assert (gt - gc).abs().max() <= 2e-3 * scale, f"{name}: max diff {(gt - gc).abs().max():.3g} of {scale:.3g}"


def test_bad_shapes_are_culled_and_refused_where_they_cannot_be_drawn():
    g = _ges(50, seed=7)
    shapes = g.shapes.clone()
    shapes[:5] = float("nan")
    shapes[5:10] = -1.0
    bad = GeneralizedGaussians(g.means, g.quats, g.scales, g.opacities, shapes, sh=g.sh)
    cams = orbit_cameras(1, 32, 32)
    out = render(bad, cams, backend="cpu")
    assert torch.isfinite(out.colors).all()
    assert not out.meta.visibility[0, :10].any()
    with pytest.raises(ValueError, match="shapes must be"):
        GeneralizedGaussians(g.means, g.quats, g.scales, g.opacities, g.shapes[:3], sh=g.sh)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_finite_shapes_at_or_below_zero_are_culled_with_zero_gradients(backend):
    """Betas <= 0 with every value finite (sanitize leaves them to the CPU kernels) draw nothing and get zero
    gradients, as the torch backend's sanitized path gives."""
    g = _ges(50, seed=8)
    shapes = g.shapes.clone()
    shapes[0], shapes[1] = 0.0, -1.5
    params = [t.clone().requires_grad_(True) for t in (g.means, g.quats, g.scales, g.opacities, shapes, g.sh)]
    cams = orbit_cameras(1, 32, 32)
    out = render(GeneralizedGaussians(*params[:5], sh=params[5]), cams, backend=backend)
    (out.colors.sum() + out.alphas.sum()).backward()
    keep = torch.arange(50) >= 2
    ref = render(GeneralizedGaussians(g.means[keep], g.quats[keep], g.scales[keep], g.opacities[keep],
                                      g.shapes[keep], sh=g.sh[keep]), cams, backend=backend)
    assert torch.allclose(out.colors.detach(), ref.colors, atol=1e-6)
    assert not out.meta.visibility[0, :2].any()
    for p in params:
        assert torch.isfinite(p.grad).all() and (p.grad[:2] == 0).all()


def test_ges_lane_runs_and_the_per_pixel_loop_give_one_image_and_one_gradient():
    """As for Gaussians (test_rasterizer_cpu): tiles made of whole lane blocks composite GES in lane vectors
    (with the vector log and exp), others pixel by pixel; images and every gradient agree."""
    _need("cpu")
    W, H = 83, 61
    g = _ges(600, seed=21, low=1.0, high=5.0)
    cams = orbit_cameras(2, W, H)
    gen = torch.Generator().manual_seed(3)
    wc = torch.rand(2, H, W, 3, generator=gen)
    out = {}
    for ts in (12, 16, 32, 8, 40):
        ps = [t.detach().clone().requires_grad_(True) for t in (g.means, g.quats, g.scales, g.opacities, g.shapes, g.sh)]
        r = render(GeneralizedGaussians(*ps[:5], sh=ps[5]), cams, backend="cpu", tile_size=ts)
        ((r.colors * wc).sum() + 0.1 * (r.depths * r.alphas).sum()).backward()
        out[ts] = [r.colors, r.alphas, r.meta.max_weight, *(p.grad for p in ps)]
    assert out[12][1].max() > 0.5  # the scene covers the frame
    for ts in (16, 32, 8, 40):
        for a, b in zip(out[12], out[ts]):
            torch.testing.assert_close(b, a, rtol=5e-4, atol=5e-5)
