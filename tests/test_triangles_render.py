"""Triangles (Triangle Splatting) on every backend against the independent float64 naive renderer
(tests/naive_triangles.py), backends against each other, and the degenerate cases of the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.rasterizer import Cameras, Triangles, render
from sparsesplat.rasterizer.backends import is_available

from naive_triangles import render_naive_triangles
from scenes import orbit_cameras
from triangle_scenes import random_triangles

SH_C0 = 0.28209479177387814
BACKENDS = ["torch", "cpu", "cuda"]
DEVICE = {"torch": "cpu", "cpu": "cpu", "cuda": "cuda"}


def _need(backend):
    if not is_available(backend):
        pytest.skip(f"backend {backend!r} is not available on this machine (no compiler or no CUDA)")


def _on(tr: Triangles, dev) -> Triangles:
    mv = lambda t: None if t is None else t.to(dev)  # noqa: E731
    return Triangles(mv(tr.vertices), mv(tr.sigma), mv(tr.opacities), sh=mv(tr.sh), colors=mv(tr.colors))


def _render(tr: Triangles, cams: Cameras, backend: str, **kw):
    out = render(_on(tr, DEVICE[backend]), cams.to(DEVICE[backend]), backend=backend, **kw)
    return (out.colors.cpu(), out.alphas.cpu(), out.depths.cpu(), out.meta)


def _reference(tr: Triangles, cams: Cameras, background):
    rgb0 = np.maximum(0.0, SH_C0 * tr.sh[:, 0].double().numpy() + 0.5)
    outs = [
        render_naive_triangles(
            tr.vertices.double().numpy(), tr.sigma.double().numpy(), tr.opacities.double().numpy(), rgb0,
            cams.viewmats[c].double().numpy(), cams.Ks[c].double().numpy(), cams.width, cams.height,
            background=background,
        )
        for c in range(len(cams))
    ]
    return [np.stack(x) for x in zip(*outs)]


def _assert_close(ours: np.ndarray, ref: np.ndarray, what: str):
    err = np.abs(ours - ref)
    assert err.mean() < 1e-5, f"{what}: mean abs error {err.mean():.3g}"
    bad = (err > 1e-3).any(-1) if err.ndim == 4 else err > 1e-3
    assert bad.mean() < 1e-3, f"{what}: {bad.sum()} of {bad.size} pixels off by > 1e-3 (max {err.max():.3g})"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, width, height, n_cams", [(1, 37, 29, 1), (40, 64, 48, 2), (400, 45, 37, 2)])
def test_matches_naive_renderer(backend, n, width, height, n_cams):
    _need(backend)
    tr = random_triangles(n, seed=n + width)
    cams = orbit_cameras(n_cams, width, height, radius=4.0)
    bg = (0.2, 0.5, 0.9)
    colors, alphas, depths, meta = _render(tr, cams, backend, background=bg)
    rgb, alpha, depth = _reference(tr, cams, bg)
    assert alpha.max() > 0.1, "the scene should cover part of the image"
    _assert_close(colors.numpy(), rgb, "colors")
    _assert_close(alphas[..., 0].numpy(), alpha, "alphas")
    covered = alpha > 0.05
    rel = np.abs(depths[..., 0].numpy() - depth)[covered] / depth[covered]
    assert np.median(rel) < 1e-5 and (rel > 1e-3).mean() < 1e-3
    assert meta.normals.shape == (n_cams, n, 3)


def test_window_function_hand_values():
    """One triangle facing the camera: K at the incentre is 1, on an edge 0, and phi/phi(s) in between."""
    f, W, H = 100.0, 64, 64
    cams = Cameras(torch.eye(4)[None], torch.tensor([[[f, 0, 32.0], [0, f, 32.0], [0, 0, 1]]]), W, H)
    # at depth 1 a 3-4-5 right triangle of 0.3 x 0.4 world units -> 30 x 40 pixels, legs on x = 12, y = 12
    verts = torch.tensor([[[-0.2, -0.2, 1.0], [0.1, -0.2, 1.0], [-0.2, 0.2, 1.0]]], dtype=torch.float64)
    sigma = torch.tensor([2.0], dtype=torch.float64)
    tr = Triangles(verts, sigma, torch.tensor([0.9], dtype=torch.float64), colors=torch.ones(1, 3, dtype=torch.float64))
    for backend in ("torch", "cpu"):
        if not is_available(backend):
            continue
        _, alphas, _, _ = _render(tr, cams.to(dtype=torch.float64), backend)
        # inradius of a 30-40-50 triangle is 10 px: incentre at (22, 22) -> pixel (row 21, col 21) centre (21.5, 21.5)
        # distances to the legs there: 9.5 each; to the hypotenuse (4x + 3y = 4*42 + 3*12 = 204): (204 - 4*21.5 - 3*21.5)/5
        d_hyp = (204 - 7 * 21.5) / 5
        q = min(9.5, d_hyp) / 10.0
        assert alphas[0, 21, 21, 0].item() == pytest.approx(0.9 * q**2, rel=1e-9)
        # a pixel centre outside the triangle
        assert alphas[0, 5, 5, 0].item() == 0.0
        # alpha vanishes towards the edge: row 13 (centre 13.5) is 1.5 px inside the leg y = 12
        assert alphas[0, 13, 20, 0].item() == pytest.approx(0.9 * (1.5 / 10.0) ** 2, rel=1e-9)
        # row 12 (0.5 px in): 0.9 * 0.05^2 < 1/255, so the sample is skipped
        assert alphas[0, 12, 20, 0].item() == 0.0


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_compiled_backends_agree_with_torch(backend):
    """Images, meta and every gradient on a few thousand triangles (float32)."""
    _need(backend)
    tr = random_triangles(1500, seed=3, hard_cases=False, sh_degree=2, size=0.15)
    cams = orbit_cameras(2, 64, 56, radius=4.0)
    res = {}
    for b in ("torch", backend):
        dev = DEVICE[b]
        params = [t.detach().clone().to(dev).requires_grad_(True) for t in (tr.vertices, tr.sigma, tr.opacities, tr.sh)]
        vm = cams.viewmats.clone().to(dev).requires_grad_(True)
        out = render(Triangles(*params[:3], sh=params[3]), Cameras(vm, cams.Ks.to(dev), 64, 56), backend=b)
        w = torch.linspace(0.2, 1.0, out.colors.numel(), device=dev).reshape(out.colors.shape)
        ((out.colors * w).sum() + 0.05 * out.depths.sum() + 0.3 * out.alphas.sum()).backward()
        res[b] = dict(img=out.colors.detach().cpu(), radii=out.meta.radii.cpu(), maxw=out.meta.max_weight.cpu(),
                      m2grad=out.meta.means2d.grad.cpu(),
                      grads=[p.grad.cpu() for p in params] + [vm.grad.cpu()])
    t, c = res["torch"], res[backend]
    diff = (t["img"] - c["img"]).abs()
    # float32: a threshold (1/255 skip, transmittance stop) may flip at a few pixels
    assert diff.mean() < 1e-6 and (diff > 1e-4).float().mean() < 1e-3, f"image diff {diff.mean():.3g} / {diff.max():.3g}"
    assert torch.equal(t["radii"] > 0, c["radii"] > 0)
    assert ((t["maxw"] - c["maxw"]).abs() > 1e-4).float().mean() < 2e-3  # a flipped threshold moves a few
    for name, gt, gc in zip(["vertices", "sigma", "opacities", "sh", "viewmats"], t["grads"], c["grads"]):
        scale = gt.abs().max()
        assert scale > 0, name
        _assert_grads_close(gt, gc, name)
    _assert_grads_close(t["m2grad"], c["m2grad"], "means2d")


def _assert_grads_close(gt, gc, name):
    """float32 gradients: close overall; the few triangles owning a pixel whose threshold decision flipped
    between backends (also seen in max_weight) may differ more."""
    scale = gt.abs().max()
    diff = (gt - gc).abs()
    assert scale > 0, name
    assert diff.norm() <= 1e-2 * gt.norm(), f"{name}: relative diff {diff.norm() / gt.norm():.3g}"
    if diff.numel() >= 1000:  # per-primitive tensors (a camera's gradient sums over all of them)
        assert torch.quantile(diff.flatten().double(), 0.99) <= 1e-3 * scale, f"{name}: 99th pct diff too large"


def test_means2d_grad_is_the_screen_translation_gradient():
    """meta.means2d.grad equals the derivative of the loss for a screen-space shift of the triangle."""
    tr = random_triangles(8, seed=11, hard_cases=False, dtype=torch.float64)
    tr.vertices.requires_grad_(True)
    cams = orbit_cameras(1, 32, 28, radius=4.0, dtype=torch.float64)
    out = render(tr, cams, backend="torch")
    out.colors.sum().backward()
    g = out.meta.means2d.grad[0]
    vis = out.meta.visibility[0]
    assert vis.sum() >= 3 and (g[vis].abs().sum(-1) > 0).all() and (g[~vis] == 0).all()
    # a shift of the principal point moves every projected vertex by the same amount, so the total
    # derivative w.r.t. cx is the sum of the per-triangle translation gradients
    Ks = cams.Ks.clone().requires_grad_(True)
    out2 = render(tr, Cameras(cams.viewmats, Ks, 32, 28), backend="torch")
    (d_cx,) = torch.autograd.grad(out2.colors.sum(), Ks)
    assert g[:, 0].sum().item() == pytest.approx(d_cx[0, 0, 2].item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_triangles_are_culled_and_harmless(backend):
    """Zero-area, collinear, edge-on, NaN/Inf and behind-camera triangles render nothing, never produce a NaN
    (image or gradients), and the rest of the image is exactly what it is without them."""
    _need(backend)
    dev = DEVICE[backend]
    f, W, H = 60.0, 40, 32
    cams = Cameras(torch.eye(4)[None], torch.tensor([[[f, 0, 20.0], [0, f, 16.0], [0, 0, 1]]]), W, H).to(dev)
    good = torch.tensor([[[-0.5, -0.4, 2.0], [0.6, -0.3, 2.2], [0.0, 0.5, 1.8]],
                         [[-0.2, 0.1, 3.0], [0.7, 0.2, 3.0], [0.2, -0.6, 3.1]]])
    bad = torch.tensor([
        [[0.0, 0.0, 2.0], [0.3, 0.2, 2.0], [0.3, 0.2, 2.0]],      # zero area (repeated vertex)
        [[0.0, 0.0, 2.0], [0.2, 0.1, 2.0], [0.4, 0.2, 2.0]],      # collinear
        [[0.0, -0.3, 1.0], [0.0, 0.3, 2.0], [0.0, 0.0, 3.0]],     # edge-on: contains the camera's x = 0 plane
        [[0.0, 0.0, -2.0], [0.5, 0.0, -2.0], [0.0, 0.5, -2.0]],   # behind the camera
        [[0.0, 0.0, 2.0], [0.5, 0.0, -1.0], [0.0, 0.5, 2.0]],     # crosses the near plane
        [[float("nan"), 0.0, 2.0], [0.5, 0.0, 2.0], [0.0, 0.5, 2.0]],
        [[0.0, 0.0, 2.0], [float("inf"), 0.0, 2.0], [0.0, 0.5, 2.0]],
        [[-0.4, -0.4, 2.0], [0.4, -0.4, 2.0], [0.0, 0.4, 2.0]],   # finite vertices, NaN sigma
    ])
    n_bad = len(bad)
    verts = torch.cat([good, bad]).double().to(dev).requires_grad_(True)
    sigma = torch.tensor([1.0, 0.5] + [1.0] * (n_bad - 1) + [float("nan")], dtype=torch.float64, device=dev)
    sigma.requires_grad_(True)
    opac = torch.full((2 + n_bad,), 0.8, dtype=torch.float64, device=dev, requires_grad=True)
    colors = torch.rand(2 + n_bad, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dev)
    cams64 = cams.to(dtype=torch.float64)
    out = render(Triangles(verts, sigma, opac, colors=colors), cams64, backend=backend, background=(0.1, 0.2, 0.3))
    ref = render(Triangles(verts[:2].detach(), sigma[:2].detach(), opac[:2].detach(), colors=colors[:2]), cams64,
                 backend=backend, background=(0.1, 0.2, 0.3))
    assert torch.isfinite(out.colors).all() and torch.isfinite(out.alphas).all() and torch.isfinite(out.depths).all()
    assert ref.alphas.max() > 0.5
    assert torch.equal(out.colors, ref.colors) and torch.equal(out.alphas, ref.alphas)
    assert not out.meta.visibility[0, 2:].any() and out.meta.visibility[0, :2].all()
    (out.colors.sum() + out.depths.sum()).backward()
    for p in (verts, sigma, opac):
        assert torch.isfinite(p.grad).all()
        assert (p.grad[2:] == 0).all()


def test_gsplat_backend_refuses_triangles_clearly():
    from sparsesplat.rasterizer.backends import gsplat_backend
    from sparsesplat.rasterizer.kinds.triangle.pipeline import render_triangles

    tr = random_triangles(3, seed=0, hard_cases=False)
    with pytest.raises(ValueError, match="gsplat rasterizer backend cannot draw triangles .it draws Gaussians only"):
        render_triangles(tr, orbit_cameras(1, 16, 16), gsplat_backend, None, "classic")


@pytest.mark.parametrize("backend", BACKENDS)
def test_slivers_and_solid_triangles_match_the_reference(backend):
    """Needle-thin triangles (aspect ~1:300), solid ones (sigma 0) and ones crossing the image border: the
    bounds and the CPU row spans stay conservative where float32 cancellation is worst."""
    _need(backend)
    g = torch.Generator().manual_seed(5)
    n = 30
    a = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.8
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    side = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    verts = torch.stack([a, a + 1.5 * d, a + 0.75 * d + 0.005 * side], 1)
    sigma = torch.where(torch.arange(n) % 3 == 0, 0.0, torch.rand(n, generator=g, dtype=torch.float64) * 2)
    opac = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.45
    sh = torch.randn(n, 1, 3, generator=g, dtype=torch.float64) * 0.4
    tr = Triangles(verts.float(), sigma.float(), opac.float(), sh=sh.float())
    cams = orbit_cameras(2, 61, 47, radius=3.5)
    colors, alphas, _, _ = _render(tr, cams, backend, background=(0.0, 0.0, 0.0))
    rgb, alpha, _ = _reference(tr, cams, (0.0, 0.0, 0.0))
    assert alpha.max() > 0.3
    _assert_close(colors.numpy(), rgb, "colors")
    _assert_close(alphas[..., 0].numpy(), alpha, "alphas")
