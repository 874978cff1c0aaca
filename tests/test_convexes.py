"""Convexes (3D Convex Splatting) on the torch and cpu backends: against an independent float64 per-pixel
renderer (tests/naive_convex_renderer.py), float64 finite differences for every parameter, each other, and
degenerate inputs (collinear, coincident, NaN, behind the camera) that must never produce NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.rasterizer import Cameras, Convexes, render
from sparsesplat.rasterizer.kinds.convex import torch_stages as torch_convexes
from sparsesplat.rasterizer.build import BackendUnavailable, load_extension

from convex_scenes import random_convexes
from naive_convex_renderer import render_naive
from scenes import orbit_cameras


@pytest.fixture(scope="module")
def cpu_ok():
    try:
        load_extension("cpu")
    except BackendUnavailable as exc:
        pytest.skip(f"the C++ backend cannot be built here: {str(exc).splitlines()[0]}")
    return True


def _backends(request_cpu: bool):
    return ["torch", "cpu"] if request_cpu else ["torch"]


def _with_colors(cv: Convexes, seed: int = 1) -> Convexes:
    g = torch.Generator().manual_seed(seed)
    colors = torch.rand(len(cv), 3, generator=g, dtype=torch.float64).to(cv.points.dtype)
    return Convexes(cv.points, cv.delta, cv.sigma, cv.opacities, colors=colors)


def _naive(cv: Convexes, cams: Cameras, background):
    out = []
    for c in range(len(cams)):
        rgb, alpha, depth = render_naive(
            cv.points.double().numpy(), cv.delta.double().numpy(), cv.sigma.double().numpy(),
            cv.opacities.double().numpy(), cv.colors.double().numpy(), cams.viewmats[c].double().numpy(),
            cams.Ks[c].double().numpy(), cams.width, cams.height, background=background,
        )
        out.append((rgb, alpha, depth))
    return out


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_naive_reference(backend, dtype, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_ok")
    cams = orbit_cameras(2, 64, 48, dtype=dtype)
    cv = _with_colors(random_convexes(40, seed=3, dtype=dtype))
    bg = (0.2, 0.4, 0.1)
    with np.errstate(all="ignore"):
        ref = _naive(cv, cams, bg)
    out = render(cv, cams, backend=backend, background=torch.tensor(bg, dtype=dtype))
    assert torch.isfinite(out.colors).all() and torch.isfinite(out.alphas).all()
    for c, (rgb, alpha, depth) in enumerate(ref):
        assert alpha.max() > 0.5, "the scene should cover part of the image"
        err_rgb = np.abs(out.colors[c].double().numpy() - rgb).mean()
        err_a = np.abs(out.alphas[c, ..., 0].double().numpy() - alpha).mean()
        assert err_rgb < 1e-5 and err_a < 1e-5, (err_rgb, err_a)
        ed = out.depths[c, ..., 0].double().numpy()
        solid = alpha > 0.05
        assert np.abs(ed[solid] - depth[solid]).mean() < 1e-4
    # degenerate inputs are culled: radii 0, never visible
    assert (out.meta.radii >= 0).all()


def test_hull_of_known_points():
    sq = torch.tensor([[[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0], [1.0, -1.0], [-1.0, 1.0], [0.5, -1.0]]])
    hull, n = torch_convexes.convex_hull_2d(sq)
    assert int(n[0]) == 4  # the centre and the point on an edge are dropped
    assert hull[0, :4].tolist() == [1, 3, 0, 4]  # counter-clockwise from the lowest (x, y)
    line = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [0.5, 0.5], [3.0, 3.0]]])
    assert int(torch_convexes.convex_hull_2d(line)[1][0]) < 3
    same = torch.zeros(1, 6, 2)
    assert int(torch_convexes.convex_hull_2d(same)[1][0]) < 3


def test_projection_of_a_known_square():
    """A square facing the camera at depth 2: hull lines are the square's edges with normals as long as the
    edges (in pixels), lines scaled by z delta, sharpness z sigma."""
    f, W, H = 100.0, 64, 48
    pts = torch.tensor([[[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.1, 0.1, 0.0], [-0.1, 0.1, 0.0]]], dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[2, 3] = 2.0
    K = torch.tensor([[f, 0, 32.0], [0, f, 24.0], [0, 0, 1]], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    proj = torch_convexes.project_convexes(pts, 0.5 * one, 0.25 * one, 0.8 * one, viewmat[None], K[None], W, H)
    assert proj.means2d[0, 0].tolist() == pytest.approx([32.0, 24.0])
    assert int(proj.nedges[0, 0]) == 4 and proj.depths[0, 0] == pytest.approx(2.0)
    assert proj.sharp[0, 0] == pytest.approx(0.5)
    raw = proj.lines[0, 0] / (2.0 * 0.5)
    side = 10.0  # 0.2 world units at depth 2 with f = 100
    for nx, ny, o in raw.tolist():
        assert np.hypot(nx, ny) == pytest.approx(side)
        assert o == pytest.approx(-side * side / 2)  # each edge is 5 px from the centre
    # conservative bound: sigmoid(-s phi) reaches 1/(255 o) no further out than c / |n| from every edge
    c = np.log(255 * 0.8 - 1) / (0.5 * 1.0)
    assert int(proj.radii[0, 0, 0]) >= 5 + c / side * np.sqrt(2) - 1e-9


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_gradcheck_every_parameter(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_ok")
    cams = orbit_cameras(2, 20, 16, dtype=torch.float64)
    cv = random_convexes(3, seed=11, hard_cases=False, size=0.8, dtype=torch.float64)
    colors = torch.rand(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    bg = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)
    w = torch.randn(2, 16, 20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def f(points, delta, sigma, opac, col, viewmats):
        out = render(Convexes(points, delta, sigma, opac, colors=col), Cameras(viewmats, cams.Ks, 20, 16),
                     backend=backend, background=bg)
        return (torch.cat([out.colors, out.alphas, out.depths], -1) * w).sum()

    args = [t.clone().requires_grad_(True) for t in (cv.points, cv.delta, cv.sigma, cv.opacities, colors, cams.viewmats)]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_cpu_matches_torch_images_and_gradients(cpu_ok):
    cams = orbit_cameras(2, 70, 52)  # not multiples of the tile size: edge tiles are partial
    cv = random_convexes(120, seed=7, sh_degree=1)
    outs, grads = {}, {}
    w = torch.randn(2, 52, 70, 5, generator=torch.Generator().manual_seed(0))
    for backend in ("torch", "cpu"):
        params = [t.clone().requires_grad_(True) for t in (cv.points, cv.delta, cv.sigma, cv.opacities, cv.sh)]
        out = render(Convexes(*params[:4], sh=params[4]), cams, backend=backend)
        loss = (torch.cat([out.colors, out.alphas, out.depths], -1) * w).sum()
        loss.backward()
        outs[backend] = out
        grads[backend] = [p.grad for p in params] + [out.meta.means2d.grad]
    a, b = outs["torch"], outs["cpu"]
    assert (a.colors - b.colors).abs().max() < 1e-4 and (a.alphas - b.alphas).abs().max() < 1e-4
    assert torch.equal(a.meta.radii, b.meta.radii)
    assert (a.meta.max_weight - b.meta.max_weight).abs().max() < 1e-4
    for ga, gb in zip(grads["torch"], grads["cpu"]):
        assert torch.isfinite(gb).all()
        scale = ga.abs().max().clamp_min(1e-6)
        assert ((ga - gb).abs().max() / scale) < 2e-3
    assert a.meta.means2d.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_degenerate_convexes_are_culled_without_corrupting_others(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_ok")
    cams = orbit_cameras(2, 64, 48)
    good = random_convexes(12, seed=4, hard_cases=False)
    P = 6
    centre = torch.tensor([0.25, -0.125, 0.375])
    t = (torch.arange(P) - 2.5) / 4  # collinear points exactly representable in float32
    bad_points = torch.stack([
        centre + t[:, None] * torch.tensor([0.5, 0.25, -0.25]),  # collinear
        centre.expand(P, 3),  # coincident
        torch.full((P, 3), float("nan")),  # NaN
        torch.tensor([[1e3, 1e3, 1e3]]).expand(P, 3) + torch.randn(P, 3),  # far away / behind some camera
        centre + torch.randn(P, 3) * 0.3,  # fine points, NaN opacity
        centre + torch.randn(P, 3) * 0.3,  # fine points, zero delta
    ])
    bad_delta = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.0])
    bad_sigma = torch.full((6,), 0.5)
    bad_opac = torch.tensor([0.9, 0.9, 0.9, 0.9, float("nan"), 0.9])
    mixed = Convexes(torch.cat([good.points, bad_points]), torch.cat([good.delta, bad_delta]),
                     torch.cat([good.sigma, bad_sigma]), torch.cat([good.opacities, bad_opac]),
                     sh=torch.cat([good.sh, torch.randn(6, 1, 3)]))
    params = [t.clone().requires_grad_(True) for t in (mixed.points, mixed.delta, mixed.sigma, mixed.opacities, mixed.sh)]
    out = render(Convexes(*params[:4], sh=params[4]), cams, backend=backend)
    ref = render(good, cams, backend=backend)
    assert torch.isfinite(out.colors).all() and torch.isfinite(out.depths).all()
    assert (out.meta.radii[:, 12:] == 0).all()
    assert torch.allclose(out.colors, ref.colors, atol=1e-6) and torch.allclose(out.alphas, ref.alphas, atol=1e-6)
    out.colors.sum().backward()
    for p in params:
        assert torch.isfinite(p.grad).all()
        assert (p.grad[12:] == 0).all()


def test_behind_and_straddling_the_camera_are_culled():
    cams = orbit_cameras(1, 32, 24)
    eye = cams.centers[0]
    fwd = -cams.camtoworlds[0, :3, 2] * -1  # camera z axis (forward) in world
    g = torch.Generator().manual_seed(0)  # unseeded, the global RNG's state (test order) decided the shapes
    pts = torch.stack([eye + fwd * 0.5 + torch.randn(6, 3, generator=g) * 1.0 for _ in range(2)])
    pts[0, :3] = eye + fwd * torch.tensor([-0.5, 0.2, 1.0])[:, None] + 0.1 * torch.randn(3, 3, generator=g)
    pts[0, 3:] = eye - fwd * 0.3 + 0.3 * torch.randn(3, 3, generator=g)  # straddles the camera plane
    pts[1] = eye - fwd * 2 + torch.randn(6, 3, generator=g) * 0.1  # fully behind
    cv = Convexes(pts, torch.full((2,), 0.1), torch.full((2,), 0.5), torch.full((2,), 0.9), colors=torch.ones(2, 3))
    out = render(cv, cams, backend="torch")
    assert (out.meta.radii == 0).all() and out.alphas.abs().max() == 0


def test_constructor_checks_shapes():
    with pytest.raises(ValueError, match="3 <= P <= 8"):
        Convexes(torch.zeros(2, 9, 3), torch.ones(2), torch.ones(2), torch.ones(2), colors=torch.ones(2, 3))
    with pytest.raises(ValueError, match="delta and sigma"):
        Convexes(torch.zeros(2, 6, 3), torch.ones(3), torch.ones(2), torch.ones(2), colors=torch.ones(2, 3))


def test_gaussian_only_backend_says_so():
    from sparsesplat.rasterizer.backends import gsplat_backend  # the module; gsplat itself is not imported
    from sparsesplat.rasterizer.kinds.convex.pipeline import render_convexes

    cv = random_convexes(3, hard_cases=False)
    with pytest.raises(ValueError, match="gsplat rasterizer backend cannot draw convexes .it draws Gaussians only"):
        render_convexes(cv, orbit_cameras(1, 16, 16), gsplat_backend, None, "classic")
