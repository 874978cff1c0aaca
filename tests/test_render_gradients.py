"""Gradients of render() against float64 central finite differences, and projection parity with gsplat."""

from __future__ import annotations

import pytest
import torch

from sparsesplat.rasterizer import Cameras, Gaussians, render
from sparsesplat.rasterizer.backends import is_available
from sparsesplat.rasterizer.kinds.gaussian.torch_stages import project_gaussians
from sparsesplat.rasterizer.quaternions import quat_to_rotmat
from sparsesplat.rasterizer.sh import sh_basis

from finite_differences import assert_matches_finite_differences
from scenes import orbit_cameras

BACKENDS = ["torch", "cpu", "cuda"]


def _small_scene(seed=0, n=6, sh_degree=1):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.5
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.25 + 0.1
    opac = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.3
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.3
    return means, quats, scales, opac, sh


def _loss_fn(backend, cams_K, width, height, mode):
    w = torch.linspace(0.5, 1.5, width * height * 3, dtype=torch.float64).reshape(height, width, 3)

    def loss(means, quats, scales, opac, sh, viewmats):
        cams = Cameras(viewmats, cams_K, width, height)
        out = render(Gaussians(means, quats, scales, opac, sh=sh), cams, backend=backend,
                     background=(0.3, 0.3, 0.3), rasterize_mode=mode)
        return (out.colors * w).sum() + 0.1 * (out.depths * out.alphas).sum() + 0.5 * out.alphas.sum()

    return loss


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_torch_gradients_match_finite_differences(mode):
    cams = orbit_cameras(2, 24, 20, radius=3.0, dtype=torch.float64)
    f = _loss_fn("torch", cams.Ks, 24, 20, mode)
    names = ["means", "quats", "scales", "opacities", "sh", "viewmats"]
    assert_matches_finite_differences(f, [*_small_scene(), cams.viewmats], names)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_compiled_gradients_match_torch(backend):
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} is not available here")
    from scenes import random_gaussians

    g = random_gaussians(1000, seed=5, hard_cases=False, sh_degree=2)
    cams = orbit_cameras(2, 64, 64)
    grads = {}
    for b in ("torch", backend):
        dev = "cuda" if b == "cuda" else "cpu"
        params = [t.detach().clone().to(dev).requires_grad_(True) for t in (g.means, g.quats, g.scales, g.opacities, g.sh)]
        vm = cams.viewmats.clone().to(dev).requires_grad_(True)
        out = render(Gaussians(*params[:4], sh=params[4]), Cameras(vm, cams.Ks.to(dev), 64, 64), backend=b)
        w = torch.linspace(0.2, 1.0, out.colors.numel(), device=dev).reshape(out.colors.shape)
        ((out.colors * w).sum() + 0.05 * out.depths.sum()).backward()
        grads[b] = [p.grad.cpu() for p in params] + [vm.grad.cpu()]
    for name, gt, gc in zip(["means", "quats", "scales", "opacities", "sh", "viewmats"], grads["torch"], grads[backend]):
        scale = gt.abs().max()
        assert (gc - gt).abs().max() <= 1e-4 * scale + 1e-7, f"{name}: max diff {(gc - gt).abs().max():.3g} (scale {scale:.3g})"


def test_sh_basis_is_orthonormal():
    """Monte-Carlo-free check: integrate products of the basis over a fine sphere grid."""
    th = (torch.arange(400, dtype=torch.float64) + 0.5) * torch.pi / 400
    ph = (torch.arange(800, dtype=torch.float64) + 0.5) * 2 * torch.pi / 800
    T, P = torch.meshgrid(th, ph, indexing="ij")
    dirs = torch.stack([T.sin() * P.cos(), T.sin() * P.sin(), T.cos()], -1)
    Y = sh_basis(dirs, 3)  # (400,800,16)
    dA = (T.sin() * (torch.pi / 400) * (2 * torch.pi / 800))[..., None, None]
    gram = (Y[..., :, None] * Y[..., None, :] * dA).sum((0, 1))
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=1e-4)


def test_projection_matches_gsplat_reference():
    gs = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat is not installed")
    g = torch.Generator().manual_seed(0)
    n = 500
    means = torch.randn(n, 3, generator=g) * 1.5
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.5 - 2)
    opac = torch.ones(n)
    cams = orbit_cameras(3, 120, 90)
    ours = project_gaussians(means, quats, scales, opac, cams.viewmats, cams.Ks, 120, 90, antialiased=True)
    R = quat_to_rotmat(quats / quats.norm(dim=-1, keepdim=True))
    M = R * scales[:, None]
    radii, means2d, depths, conics, comp = gs._fully_fused_projection(
        means, M @ M.transpose(1, 2), cams.viewmats, cams.Ks, 120, 90, calc_compensations=True
    )
    both = (ours.radii > 0).all(-1) & (radii > 0).all(-1)
    assert both.sum() > 0.5 * n * 3 * 0.5
    assert torch.allclose(ours.means2d[both], means2d[both], atol=1e-3, rtol=1e-5)
    assert torch.allclose(ours.depths[both], depths[both], rtol=1e-5)
    assert torch.allclose(ours.conics[both], conics[both], rtol=1e-3, atol=1e-6)
    assert torch.allclose(ours.opacities[both], comp[both], rtol=1e-4, atol=1e-6)
    # our bounds are opacity-aware: never larger than gsplat's fixed 3.33-sigma box
    assert (ours.radii[both] <= radii[both]).all()
