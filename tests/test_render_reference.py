"""Every backend against the independent float64 naive renderer (tests/naive_renderer.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.rasterizer import Cameras, Gaussians, render
from sparsesplat.rasterizer.backends import is_available

from naive_renderer import render_naive
from scenes import orbit_cameras, random_gaussians

SH_C0 = 0.28209479177387814
BACKENDS = ["torch", "cpu", "cuda", "gsplat"]
DEVICE = {"torch": "cpu", "cpu": "cpu", "cuda": "cuda", "gsplat": "cuda"}


def _need(backend):
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} is not available on this machine (no compiler or no CUDA)")


def _render(g: Gaussians, cams: Cameras, backend: str, **kw):
    """render() on the backend's device, results back on the CPU."""
    dev = DEVICE[backend]
    mv = lambda t: None if t is None else t.to(dev)  # noqa: E731
    g = Gaussians(mv(g.means), mv(g.quats), mv(g.scales), mv(g.opacities), sh=mv(g.sh), colors=mv(g.colors))
    if torch.is_tensor(kw.get("background")):
        kw["background"] = kw["background"].to(dev)
    out = render(g, cams.to(dev), backend=backend, **kw)
    for name in ("colors", "alphas", "depths"):
        if getattr(out, name) is not None:
            setattr(out, name, getattr(out, name).cpu())
    out.meta.visibility = out.meta.visibility.cpu()
    return out


def _reference(g: Gaussians, cams: Cameras, background, antialiased=False):
    rgb0 = np.maximum(0.0, SH_C0 * g.sh[:, 0].double().numpy() + 0.5)
    outs = [
        render_naive(
            g.means.double().numpy(), g.quats.double().numpy(), g.scales.double().numpy(),
            g.opacities.double().numpy(), rgb0, cams.viewmats[c].double().numpy(), cams.Ks[c].double().numpy(),
            cams.width, cams.height, background=background, antialiased=antialiased,
        )
        for c in range(len(cams))
    ]
    return [np.stack(x) for x in zip(*outs)]


def _assert_close(ours: np.ndarray, ref: np.ndarray, what: str):
    err = np.abs(ours - ref)
    assert err.mean() < 1e-5, f"{what}: mean abs error {err.mean():.3g}"
    # float32 vs float64 may flip a threshold decision (1/255 skip, transmittance stop) at a few pixels
    bad = (err > 1e-3).any(-1) if err.ndim == 4 else err > 1e-3
    assert bad.mean() < 1e-3, f"{what}: {bad.sum()} of {bad.size} pixels off by > 1e-3 (max {err.max():.3g})"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "n, width, height, n_cams",
    [(1, 37, 29, 1), (40, 64, 48, 3), (400, 37, 29, 2), (2000, 100, 75, 3)],
)
def test_matches_naive_renderer(backend, n, width, height, n_cams):
    _need(backend)
    g = random_gaussians(n, seed=n + width)
    cams = orbit_cameras(n_cams, width, height)
    bg = (0.2, 0.5, 0.9)
    out = _render(g, cams, backend, background=bg)
    rgb, alpha, depth = _reference(g, cams, bg)
    _assert_close(out.colors.numpy(), rgb, "colors")
    _assert_close(out.alphas[..., 0].numpy(), alpha, "alphas")
    # expected depth is a ratio: compare where the pixel is reasonably covered
    covered = alpha > 0.05
    rel = np.abs(out.depths[..., 0].numpy() - depth)[covered] / depth[covered]
    assert np.median(rel) < 1e-5 and (rel > 1e-3).mean() < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_antialiased_matches_naive(backend):
    _need(backend)
    g = random_gaussians(300, seed=7)
    cams = orbit_cameras(2, 48, 40)
    out = _render(g, cams, backend, rasterize_mode="antialiased")
    rgb, alpha, _ = _reference(g, cams, (0, 0, 0), antialiased=True)
    _assert_close(out.colors.numpy(), rgb, "colors")
    _assert_close(out.alphas[..., 0].numpy(), alpha, "alphas")
    # the compensation only ever lowers opacity
    classic = _render(g, cams, backend, rasterize_mode="classic")
    assert out.alphas.sum() < classic.alphas.sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_scene_renders_background(backend):
    _need(backend)
    z = torch.zeros(0, 3)
    g = Gaussians(z, torch.zeros(0, 4), z, torch.zeros(0), colors=z)
    cams = orbit_cameras(2, 20, 10)
    out = _render(g, cams, backend, background=torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    assert torch.equal(out.colors[0], torch.tensor([1.0, 0, 0]).expand(10, 20, 3))
    assert torch.equal(out.colors[1], torch.tensor([0, 1.0, 0]).expand(10, 20, 3))
    assert out.alphas.abs().max() == 0 and out.depths.abs().max() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_inputs_are_culled(backend):
    _need(backend)
    g = random_gaussians(200, seed=3)
    cams = orbit_cameras(2, 40, 30)
    clean = _render(g, cams, backend, background=(1, 1, 1))
    bad_means, bad_quats, bad_scales = g.means.clone(), g.quats.clone(), g.scales.clone()
    bad_op, bad_sh = g.opacities.clone(), g.sh.clone()
    bad_means[0, 1] = float("nan")
    bad_quats[1] = 0.0
    bad_scales[2, 0] = float("inf")
    bad_op[3] = float("nan")
    bad_sh[4, 0, 2] = float("-inf")
    poisoned = Gaussians(bad_means, bad_quats, bad_scales, bad_op, sh=bad_sh)
    out = _render(poisoned, cams, backend, background=(1, 1, 1))
    assert torch.isfinite(out.colors).all() and torch.isfinite(out.depths).all()
    # equals the scene rendered without those five Gaussians
    keep = torch.arange(200) >= 5
    ref = _render(Gaussians(g.means[keep], g.quats[keep], g.scales[keep], g.opacities[keep], sh=g.sh[keep]),
                  cams, backend, background=(1, 1, 1))
    assert torch.allclose(out.colors, ref.colors, atol=1e-6)
    assert not out.meta.visibility[:, :5].any()
    assert not torch.equal(out.colors, clean.colors)  # the culled ones were visible before


@pytest.mark.parametrize("backend", BACKENDS)
def test_ill_formed_finite_gaussians_are_culled_with_zero_gradients(backend):
    """Zero quaternions and negative scales (finite values: sanitize leaves them to the kernels on the backends
    of CULLS_ILL_FORMED) render as if absent, are not visible, and get zero gradients."""
    _need(backend)
    g = random_gaussians(200, seed=5)
    cams = orbit_cameras(2, 40, 30)
    quats, scales = g.quats.clone(), g.scales.clone()
    quats[0] = 0.0
    scales[1, 2] = -0.5
    scales[2] = -scales[2]
    dev = DEVICE[backend]
    params = [t.to(dev).requires_grad_(True) for t in (g.means, quats, scales, g.opacities, g.sh)]
    out = render(Gaussians(*params[:4], sh=params[4]), cams.to(dev), backend=backend, background=(1, 1, 1))
    (out.colors.sum() + out.depths.sum()).backward()
    keep = torch.arange(200) >= 3
    ref = _render(Gaussians(g.means[keep], g.quats[keep], g.scales[keep], g.opacities[keep], sh=g.sh[keep]),
                  cams, backend, background=(1, 1, 1))
    assert torch.allclose(out.colors.detach().cpu(), ref.colors, atol=1e-6)
    assert not out.meta.visibility[:, :3].any() and out.meta.visibility[:, 3:].any()
    for p in params:
        assert torch.isfinite(p.grad).all() and (p.grad[:3] == 0).all()
        assert p.grad[3:].abs().sum() > 0


def test_gaussian_behind_camera_is_culled_not_mirrored():
    cams = orbit_cameras(1, 32, 32)
    centre = cams.centers[0]
    forward = cams.viewmats[0, 2, :3]
    means = (centre - 2.0 * forward)[None]  # 2 units behind the camera
    g = Gaussians(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.5), torch.ones(1), colors=torch.ones(1, 3))
    out = render(g, cams, backend="torch")
    assert out.alphas.max() == 0 and not out.meta.visibility.any()


def test_meta_means2d_gradient_and_max_weight():
    g = random_gaussians(50, seed=1, hard_cases=False)
    g.means.requires_grad_(True)
    cams = orbit_cameras(2, 40, 32)
    out = render(g, cams, backend="torch")
    out.colors.sum().backward()
    m2 = out.meta.means2d
    assert m2.grad is not None and m2.grad.shape == (2, 50, 2)
    vis = out.meta.visibility
    assert (m2.grad[~vis] == 0).all()
    assert (out.meta.max_weight[~vis] == 0).all()
    assert (out.meta.max_weight <= 0.99 + 1e-6).all() and (out.meta.max_weight[vis] > 0).any()


def test_auto_falls_back_to_torch_with_the_build_message(monkeypatch):
    """No compiler: 'auto' warns once with the reason and renders with the torch backend."""
    import sparsesplat.rasterizer.backends as B
    from sparsesplat.rasterizer import build

    monkeypatch.setattr(build, "_modules", {})
    monkeypatch.setattr(build, "_failures", {"cpu": build.BackendUnavailable("could not build: g++ not found")})
    monkeypatch.setattr(B, "_warned", set())
    g = random_gaussians(20, seed=0)
    with pytest.warns(RuntimeWarning, match="g\\+\\+ not found"):
        out = render(g, orbit_cameras(1, 16, 16), backend="auto")
    assert out.meta.backend == "torch"
