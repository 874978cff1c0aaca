"""The C++/OpenMP Gaussian backend against a float64 NumPy reference of DESIGN.md §3, gsplat's PyTorch
projection, finite differences (float64 gradcheck) and the torch oracle backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.rasterizer.build import BackendUnavailable, is_available, load_extension
from sparsesplat.rasterizer.cameras import intrinsics, look_at


@pytest.fixture(scope="module")
def cpu():
    try:
        load_extension("cpu")
    except BackendUnavailable as exc:
        pytest.skip(f"the C++ backend cannot be built here: {str(exc).splitlines()[0]}")
    from types import SimpleNamespace

    from sparsesplat.rasterizer.backends.cpu import sh_to_rgb
    from sparsesplat.rasterizer.kinds.gaussian.compiled_stages import stages

    project_gaussians, rasterize = stages("cpu")
    return SimpleNamespace(project_gaussians=project_gaussians, rasterize=rasterize, sh_to_rgb=sh_to_rgb)


# ---------------------------------------------------------------------------------------------------------
# float64 NumPy reference: per pixel, every Gaussian, globally depth-sorted, no tiles
# ---------------------------------------------------------------------------------------------------------

def _rotmat(q):
    w, x, y, z = q.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)


def np_project(means, quats, scales, opacities, viewmats, Ks, W, H, eps2d=0.3, near=0.01, far=1e10, aa=False):
    """Returns means2d (C,N,2), conics (C,N,3), depths (C,N), opacities (C,N), radii (C,N,2), all float64."""
    means, quats, scales, opacities, viewmats, Ks = (np.asarray(a, np.float64) for a in
                                                     (means, quats, scales, opacities, viewmats, Ks))
    C, N = len(viewmats), len(means)
    with np.errstate(all="ignore"):
        finite = (np.isfinite(means).all(1) & np.isfinite(quats).all(1) & np.isfinite(scales).all(1)
                  & np.isfinite(opacities))
        qn = np.linalg.norm(quats, axis=1)
        finite &= qn > 0
        q = np.where(finite[:, None], quats / np.where(qn > 0, qn, 1)[:, None], [1.0, 0, 0, 0])
        s = np.where(finite[:, None], scales, 0.0)
        m = np.where(finite[:, None], means, 0.0)
        M = _rotmat(q) * s[:, None, :]
        S3 = M @ M.transpose(0, 2, 1)
        out = dict(means2d=np.zeros((C, N, 2)), conics=np.zeros((C, N, 3)), depths=np.zeros((C, N)),
                   opacities=np.zeros((C, N)), radii=np.zeros((C, N, 2), np.int64))
        for c in range(C):
            R, t = viewmats[c, :3, :3], viewmats[c, :3, 3]
            fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
            p = m @ R.T + t
            z = p[:, 2]
            valid = finite & (z >= near) & (z <= far)
            zs = np.where(valid, z, 1.0)
            Sc = R @ S3 @ R.T
            tan_x, tan_y = 0.5 * W / fx, 0.5 * H / fy
            u = np.clip(p[:, 0] / zs, -(cx / fx + 0.3 * tan_x), (W - cx) / fx + 0.3 * tan_x)
            v = np.clip(p[:, 1] / zs, -(cy / fy + 0.3 * tan_y), (H - cy) / fy + 0.3 * tan_y)
            J = np.zeros((N, 2, 3))
            J[:, 0, 0], J[:, 0, 2] = fx / zs, -fx * u / zs
            J[:, 1, 1], J[:, 1, 2] = fy / zs, -fy * v / zs
            S2 = J @ Sc @ J.transpose(0, 2, 1)
            a, b, cc = S2[:, 0, 0] + eps2d, S2[:, 0, 1], S2[:, 1, 1] + eps2d
            detb = a * cc - b * b
            valid &= detb > 0
            dets = np.where(valid, detb, 1.0)
            o = opacities.copy()
            if aa:
                det2 = S2[:, 0, 0] * S2[:, 1, 1] - b * b
                o = o * np.sqrt(np.maximum(det2 / dets, 0.0))
            valid &= o >= 1 / 255
            extent = np.minimum(3.33, np.sqrt(2 * np.log(np.maximum(255 * o, 1.0))))
            rx = np.ceil(extent * np.sqrt(np.where(valid, a, 1.0)))
            ry = np.ceil(extent * np.sqrt(np.where(valid, cc, 1.0)))
            mx, my = fx * p[:, 0] / zs + cx, fy * p[:, 1] / zs + cy
            valid &= (mx + rx > 0) & (mx - rx < W) & (my + ry > 0) & (my - ry < H)
            out["means2d"][c] = np.stack([mx, my], -1) * valid[:, None]
            out["conics"][c] = np.stack([cc / dets, -b / dets, a / dets], -1) * valid[:, None]
            out["depths"][c] = np.where(valid, z, 0.0)
            out["opacities"][c] = np.where(valid, o, 0.0)
            out["radii"][c] = np.stack([rx, ry], -1) * valid[:, None]
    return out


def np_rasterize(means2d, conics, colors, opacities, depths, radii, W, H):
    """feats (C,H,W,4), alphas (C,H,W,1), max_weight (C,N) in float64."""
    C, N = means2d.shape[:2]
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    px, py = jj.ravel(), ii.ravel()
    feats = np.zeros((C, H * W, 4))
    alphas = np.zeros((C, H * W))
    maxw = np.zeros((C, N))
    for c in range(C):
        vis = np.nonzero((radii[c] > 0).all(-1))[0]
        order = vis[np.argsort(depths[c, vis], kind="stable")]
        T = np.ones(H * W)
        done = np.zeros(H * W, bool)
        for g in order:
            dx, dy = px - means2d[c, g, 0], py - means2d[c, g, 1]
            a, b, cc = conics[c, g]
            s = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = np.minimum(0.99, opacities[c, g] * np.exp(-s))
            use = (s >= 0) & (alpha >= 1 / 255) & ~done
            next_T = T * (1 - alpha)
            stop = use & (next_T < 1e-4)
            done |= stop
            use &= ~stop
            w = np.where(use, alpha * T, 0.0)
            feats[c, :, :3] += w[:, None] * colors[c, g]
            feats[c, :, 3] += w * depths[c, g]
            maxw[c, g] = w.max(initial=0.0)
            T = np.where(use, next_T, T)
        alphas[c] = 1 - T
    return feats.reshape(C, H, W, 4), alphas.reshape(C, H, W, 1), maxw


# ---------------------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------------------

def make_cameras(W, H, C=3, dtype=torch.float32):
    eyes = [(0.0, -5.0, 1.0), (3.5, -3.5, 2.0), (-4.0, -2.0, -1.5)]
    vm = torch.stack([look_at(eyes[i % 3], (0.1 * i, 0.0, 0.0)) for i in range(C)])
    f = 0.9 * W
    Ks = torch.stack([intrinsics(f * (1 + 0.1 * i), f, W / 2 + i, H / 2 - i) for i in range(C)])
    return vm.to(dtype), Ks.to(dtype)


def make_scene(N, seed=0, dtype=torch.float32, edge_cases=True):
    """Random Gaussians around the origin; with edge_cases, also huge, tiny, near-transparent, far off to
    the side (partly off-screen) and behind-the-camera ones."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g, dtype=torch.float64) * 1.2
    quats = torch.randn(N, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.empty(N, 3, dtype=torch.float64).uniform_(-4.0, -1.5, generator=g))
    opac = torch.empty(N, dtype=torch.float64).uniform_(0.05, 1.0, generator=g)
    if edge_cases and N >= 10:
        k = N // 10
        idx = torch.randperm(N, generator=g)
        huge, tiny, faint, side, behind = (idx[i * k:(i + 1) * k] for i in range(5))
        scales[huge] *= 20.0
        scales[tiny] *= 1e-3
        opac[faint] = torch.empty(len(faint), dtype=torch.float64).uniform_(0.0, 0.01, generator=g)
        means[side, 0] += 3.0 * torch.sign(means[side, 0])
        means[behind] = means[behind] * 0.2 + torch.tensor([0.0, -6.0, 1.0], dtype=torch.float64)
    colors = torch.rand(3, N, 3, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (means, quats, scales, opac)], colors.to(dtype)


def render(backend, params, colors, vm, Ks, W, H, aa=False, tile_size=16):
    P = backend.project_gaussians(*params, vm, Ks, W, H, antialiased=aa)
    feats, alphas, maxw = backend.rasterize(P.means2d, P.conics, colors[: len(vm)], P.opacities, P.depths,
                                            P.radii, W, H, tile_size)
    return P, feats, alphas, maxw


def _np(t):
    return t.detach().double().numpy()


# ---------------------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("N,W,H,aa", [(1, 37, 29, False), (60, 37, 29, True), (500, 64, 48, False),
                                      (2000, 100, 75, False), (2000, 64, 48, True)])
def test_forward_matches_numpy_reference(cpu, N, W, H, aa):
    params, colors = make_scene(N, seed=N + W)
    vm, Ks = make_cameras(W, H)
    P, feats, alphas, maxw = render(cpu, params, colors, vm, Ks, W, H, aa=aa)
    ref = np_project(*[_np(p) for p in params], _np(vm), _np(Ks), W, H, aa=aa)

    radii = P.radii.numpy()
    both = (radii > 0).all(-1) & (ref["radii"] > 0).all(-1)
    assert ((radii > 0).all(-1) != (ref["radii"] > 0).all(-1)).mean() < 2e-3
    np.testing.assert_allclose(_np(P.means2d)[both], ref["means2d"][both], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(_np(P.depths)[both], ref["depths"][both], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(P.opacities)[both], ref["opacities"][both], rtol=1e-4, atol=1e-6)
    con_scale = np.abs(ref["conics"][both]).max(-1, keepdims=True) + 1e-12
    assert (np.abs(_np(P.conics)[both] - ref["conics"][both]) / con_scale).max() < 1e-3
    assert np.abs(radii[both] - ref["radii"][both]).max() <= 1

    f_ref, a_ref, w_ref = np_rasterize(ref["means2d"], ref["conics"], _np(colors[:3]), ref["opacities"],
                                       ref["depths"], ref["radii"], W, H)
    assert N < 100 or a_ref.mean() > 0.02  # the scene covers the image
    # colour channels and alpha; the depth channel in relative terms
    err = np.abs(np.concatenate([_np(feats)[..., :3] - f_ref[..., :3], _np(alphas) - a_ref], -1))
    derr = np.abs(_np(feats)[..., 3] - f_ref[..., 3]) / (np.abs(ref["depths"]).max() + 1e-9)
    assert err.mean() < 1e-5 and derr.mean() < 1e-5
    bad = (err.max(-1) > 1e-3) | (derr > 1e-3)
    assert bad.mean() < 1e-3, f"{bad.sum()} pixels off by > 1e-3"
    assert np.abs(_np(maxw) - w_ref).max() < 2e-3
    assert np.isfinite(feats.numpy()).all()


def test_projection_matches_gsplat_reference(cpu):
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    W, H = 64, 48
    params, _ = make_scene(1500, seed=3)
    means, quats, scales, opac = params
    vm, Ks = make_cameras(W, H)
    P = cpu.project_gaussians(means, quats, scales, opac, vm, Ks, W, H)
    R = torch_impl._quat_to_rotmat(quats)
    M = R * scales[:, None, :]
    covars = M @ M.transpose(1, 2)
    radii_g, means2d_g, depths_g, conics_g, _ = torch_impl._fully_fused_projection(
        means, covars, vm, Ks, W, H, eps2d=0.3, near_plane=0.01, far_plane=1e10)
    ours = (P.radii > 0).all(-1)
    theirs = (radii_g > 0).all(-1)
    # gsplat bounds use a fixed 3.33 sigma extent and no opacity culling: ours is a subset
    assert not (ours & ~theirs).any()
    assert ours.sum() > 0.5 * theirs.sum()
    torch.testing.assert_close(P.means2d[ours], means2d_g[ours], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(P.depths[ours], depths_g[ours], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(P.conics[ours], conics_g[ours], rtol=1e-3, atol=1e-5)
    assert (P.radii[ours] <= radii_g[ours]).all()
    full = ours & (P.opacities > 0.99)  # extent ~3.33 there: the same radii up to rounding
    assert (radii_g[full] - P.radii[full]).abs().max() <= 1


def test_tile_size_does_not_change_the_image(cpu):
    params, colors = make_scene(400, seed=5)
    vm, Ks = make_cameras(50, 40)
    _, f16, a16, w16 = render(cpu, params, colors, vm, Ks, 50, 40, tile_size=16)
    _, f8, a8, w8 = render(cpu, params, colors, vm, Ks, 50, 40, tile_size=8)
    torch.testing.assert_close(f16, f8)
    torch.testing.assert_close(a16, a8)
    torch.testing.assert_close(w16, w8)


def test_lane_runs_and_the_per_pixel_loop_give_one_image_and_one_gradient(cpu):
    """Tiles whose width is a multiple of the build's lane blocks' width (and height of their height: 2 rows on
    AVX-512) composite in lane vectors, one block or several per block row (16, 32: bucketed by the binning's
    masks; 40: taller than the masks take, bucketed by the row spans, merged per block); others (12 on AVX2 and
    AVX-512, the 61-row image's odd-height bottom tiles with 2-row blocks) by the per-pixel loop. Forward and
    backward agree across all of them."""
    W, H = 83, 61  # ragged edge tiles for every size
    params, colors = make_scene(600, seed=21)
    vm, Ks = make_cameras(W, H, C=2)
    g = torch.Generator().manual_seed(3)
    v_feats, v_alphas = torch.rand(2, H, W, 4, generator=g), torch.rand(2, H, W, 1, generator=g)
    out = {}
    for ts in (12, 16, 32, 8, 40):
        ps = [p.clone().requires_grad_(True) for p in params]
        cs = colors.clone().requires_grad_(True)
        _, feats, alphas, maxw = render(cpu, ps, cs, vm, Ks, W, H, tile_size=ts)
        ((feats * v_feats).sum() + (alphas * v_alphas).sum()).backward()
        out[ts] = [feats, alphas, maxw, *(p.grad for p in ps), cs.grad]
    assert out[12][1].max() > 0.5  # the scene covers the frame
    for ts in (16, 32, 8, 40):
        for a, b in zip(out[12], out[ts]):
            torch.testing.assert_close(b, a, rtol=2e-4, atol=2e-5)


def test_empty_scene_renders_zeros(cpu):
    vm, Ks = make_cameras(20, 10, C=2)
    params = [torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0)]
    params = [p.requires_grad_(True) for p in params]
    colors = torch.zeros(2, 0, 3, requires_grad=True)
    P, feats, alphas, maxw = render(cpu, params, colors, vm, Ks, 20, 10)
    assert feats.shape == (2, 10, 20, 4) and alphas.shape == (2, 10, 20, 1) and maxw.shape == (2, 0)
    assert (feats == 0).all() and (alphas == 0).all()
    (feats.sum() + alphas.sum()).backward()
    assert params[0].grad.shape == (0, 3)


@pytest.mark.parametrize("which", ["means", "quats", "scales", "opacities", "colors", "zero_quat"])
def test_non_finite_inputs_are_culled(cpu, which):
    W, H = 40, 30
    params, colors = make_scene(200, seed=11)
    vm, Ks = make_cameras(W, H)
    broken = [p.clone() for p in params]
    bcolors = colors.clone()
    bad = torch.arange(0, 200, 7)
    for k, val in enumerate([float("nan"), float("inf"), -float("inf")]):
        rows = bad[k::3]
        if which == "colors":
            bcolors[:, rows, 1] = val
        elif which == "zero_quat":
            broken[1][rows] = 0.0
        else:
            i = ["means", "quats", "scales", "opacities"].index(which)
            if broken[i].ndim == 1:
                broken[i][rows] = val
            else:
                broken[i][rows, k % broken[i].shape[1]] = val
    broken = [p.requires_grad_(True) for p in broken]
    bcolors.requires_grad_(True)
    P, feats, alphas, maxw = render(cpu, broken, bcolors, vm, Ks, W, H)
    assert torch.isfinite(feats).all() and torch.isfinite(alphas).all() and torch.isfinite(maxw).all()
    (feats.sum() + alphas.sum()).backward()
    for p in broken + [bcolors]:
        assert torch.isfinite(p.grad).all()
    # the healthy Gaussians render as if the broken ones were not there
    keep = torch.ones(200, dtype=torch.bool)
    keep[bad] = False
    _, f_ref, a_ref, _ = render(cpu, [p[keep] for p in params], colors[:, keep], vm, Ks, W, H)
    torch.testing.assert_close(feats.detach(), f_ref)
    torch.testing.assert_close(alphas.detach(), a_ref)


# ---------------------------------------------------------------------------------------------------------
# gradients: float64 finite differences (gradcheck) on tiny scenes
# ---------------------------------------------------------------------------------------------------------

def _tiny_scene(seed):
    W, H = 24, 20
    g = torch.Generator().manual_seed(seed)
    n = 6
    means = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([1.5, 1.2, 1.0],
                                                                                       dtype=torch.float64)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.empty(n, 3, dtype=torch.float64).uniform_(0.08, 0.35, generator=g)
    opac = torch.empty(n, dtype=torch.float64).uniform_(0.3, 0.9, generator=g)
    colors = torch.rand(2, n, 3, generator=g, dtype=torch.float64)
    vm = torch.stack([look_at((0.2, -3.0, 0.5), (0.0, 0.0, 0.0)), look_at((2.5, -2.0, 0.3), (0.0, 0.1, 0.0))])
    Ks = torch.stack([intrinsics(22.0, 21.0, 12.0, 10.0), intrinsics(20.0, 20.0, 11.5, 10.5)])
    return (means, quats, scales, opac, colors, vm, Ks), W, H


@pytest.mark.parametrize("aa", [False, True])
def test_projection_gradcheck_float64(cpu, aa):
    (means, quats, scales, opac, _, vm, Ks), W, H = _tiny_scene(1)
    # push one Gaussian out of the field of view so the clamped Jacobian is exercised
    means = means.clone()
    means[0] = torch.tensor([2.2, 0.0, 0.3], dtype=torch.float64)
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, vm)]

    def fn(m, q, s, o, v):
        P = cpu.project_gaussians(m, q, s, o, v, Ks, 200, 160, antialiased=aa)
        return P.means2d, P.conics, P.depths, P.opacities

    P = cpu.project_gaussians(means, quats, scales, opac, vm, Ks, 200, 160, antialiased=aa)
    assert (P.radii > 0).all(-1).sum() >= 8
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_rasterize_gradcheck_float64(cpu):
    (means, quats, scales, opac, colors, vm, Ks), W, H = _tiny_scene(2)
    with torch.no_grad():
        P = cpu.project_gaussians(means, quats, scales, opac, vm, Ks, W, H)
    assert (P.radii > 0).all(-1).sum() >= 8
    inputs = [t.clone().requires_grad_(True) for t in (P.means2d, P.conics, colors, P.opacities, P.depths)]
    g = torch.Generator().manual_seed(0)
    wf = torch.rand(2, H, W, 4, generator=g, dtype=torch.float64)
    wa = torch.rand(2, H, W, 1, generator=g, dtype=torch.float64)

    def fn(m2, con, col, o, d):
        feats, alphas, _ = cpu.rasterize(m2, con, col, o, d, P.radii, W, H)
        return (feats * wf).sum((1, 2)), (alphas * wa).sum((1, 2, 3))

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_end_to_end_gradcheck_float64(cpu):
    (means, quats, scales, opac, colors, vm, Ks), W, H = _tiny_scene(3)
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors, vm)]
    g = torch.Generator().manual_seed(1)
    wf = torch.rand(2, H, W, 4, generator=g, dtype=torch.float64)

    def fn(m, q, s, o, col, v):
        P = cpu.project_gaussians(m, q, s, o, v, Ks, W, H, antialiased=True)
        feats, alphas, _ = cpu.rasterize(P.means2d, P.conics, col, P.opacities, P.depths, P.radii, W, H)
        return (feats * wf).sum((1, 2)), alphas.sum((1, 2, 3))

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# the torch oracle backend
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("aa", [False, True])
def test_matches_torch_backend(cpu, aa):
    from sparsesplat.rasterizer.kinds.gaussian import torch_stages as tb
    W = H = 64
    params, colors = make_scene(1000, seed=7)
    vm, Ks = make_cameras(W, H, C=2)
    colors = colors[:2]
    g = torch.Generator().manual_seed(2)
    wf = torch.rand(2, H, W, 4, generator=g)
    wa = torch.rand(2, H, W, 1, generator=g)
    results = []
    for backend in (cpu, tb):
        ins = [t.clone().requires_grad_(True) for t in (*params, colors, vm)]
        P = backend.project_gaussians(*ins[:4], ins[5], Ks, W, H, antialiased=aa)
        feats, alphas, maxw = backend.rasterize(P.means2d, P.conics, ins[4], P.opacities, P.depths, P.radii, W, H)
        ((feats * wf).sum() + (alphas * wa).sum()).backward()
        results.append((P, feats.detach(), alphas.detach(), maxw, [t.grad for t in ins]))
    (P1, f1, a1, w1, g1), (P2, f2, a2, w2, g2) = results
    assert torch.equal(P1.radii, P2.radii)
    for x, y in zip(P1[:4], P2[:4]):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f1, f2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a1, a2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w1, w2, rtol=1e-4, atol=1e-5)
    for name, x, y in zip(["means", "quats", "scales", "opacities", "colors", "viewmats"], g1, g2):
        scale = y.abs().max().clamp_min(1e-12)
        assert ((x - y).abs().max() / scale) < 1e-4, name


def test_backward_is_deterministic(cpu):
    W, H = 64, 48
    params, colors = make_scene(2000, seed=9)
    vm, Ks = make_cameras(W, H)
    grads = []
    for _ in range(3):
        ins = [t.clone().requires_grad_(True) for t in (*params, colors, vm)]
        P = cpu.project_gaussians(*ins[:4], ins[5], Ks, W, H)
        feats, alphas, _ = cpu.rasterize(P.means2d, P.conics, ins[4], P.opacities, P.depths, P.radii, W, H)
        (feats.square().sum() + alphas.sum()).backward()
        grads.append([t.grad for t in ins])
    for other in grads[1:]:
        for x, y in zip(grads[0], other):
            assert torch.equal(x, y)


def test_bad_shapes_and_devices_are_errors(cpu):
    vm, Ks = make_cameras(20, 10, C=1)
    params, colors = make_scene(5)
    with pytest.raises(ValueError, match="quats"):
        cpu.project_gaussians(params[0], params[1][:, :3], *params[2:], vm, Ks, 20, 10)
    P = cpu.project_gaussians(*params, vm, Ks, 20, 10)
    with pytest.raises(ValueError, match="colors"):
        cpu.rasterize(P.means2d, P.conics, colors[0], P.opacities, P.depths, P.radii, 20, 10)
    with pytest.raises(ValueError, match="cpu tensors"):
        cpu.rasterize(P.means2d.to("meta"), P.conics, colors[:1], P.opacities, P.depths, P.radii, 20, 10)


# ---------------------------------------------------------------------------------------------------------
# build plumbing
# ---------------------------------------------------------------------------------------------------------

def test_cuda_unavailable_is_reported_not_raised():
    if torch.version.cuda is not None and torch.cuda.is_available():
        pytest.skip("CUDA torch present: the cuda backend may build here")
    assert is_available("cuda") is False
    with pytest.raises(BackendUnavailable, match="CUDA"):
        load_extension("cuda")


def test_unknown_kind():
    with pytest.raises(ValueError):
        load_extension("metal")


# ---------------------------------------------------------------------------------------------------------
# view-dependent colours: the compiled SH pass against rasterizer/sh.py
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colors_match_torch_and_finite_differences(cpu, degree):
    from sparsesplat.rasterizer.sh import sh_to_rgb

    g = torch.Generator().manual_seed(degree)
    n = 37  # lane blocks of 4, 8 or 16 primitives and a remainder that goes through the per-primitive path
    sh = torch.randn(n, 16, 3, generator=g, dtype=torch.float64) * 0.6
    dirs = torch.randn(2, n, 3, generator=g, dtype=torch.float64) * 3.0
    ref = sh_to_rgb(sh, dirs, degree)
    assert (ref == 0).any()  # the clamp at 0 is exercised
    torch.testing.assert_close(cpu.sh_to_rgb(sh, dirs, degree), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cpu.sh_to_rgb(sh.float(), dirs.float(), degree), ref.float(), rtol=1e-5, atol=1e-6)
    inputs = [sh.clone().requires_grad_(True), dirs.clone().requires_grad_(True)]
    assert torch.autograd.gradcheck(lambda s, d: cpu.sh_to_rgb(s, d, degree), inputs, eps=1e-6, atol=1e-7)
    # same gradients as autograd through the PyTorch version, weights on every output
    w = torch.rand(2, n, 3, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((cpu.sh_to_rgb(*inputs, degree) * w).sum(), inputs)
    grads_ref = torch.autograd.grad((sh_to_rgb(*inputs, degree) * w).sum(), inputs, allow_unused=True)
    for a, b, x in zip(grads, grads_ref, inputs):  # (degree 0: the colour does not depend on the direction)
        torch.testing.assert_close(a, torch.zeros_like(x) if b is None else b, rtol=1e-10, atol=1e-12)


def test_sh_colors_bad_degree_is_an_error(cpu):
    with pytest.raises(ValueError, match="coefficients"):
        cpu.sh_to_rgb(torch.zeros(3, 4, 3), torch.ones(1, 3, 3), 2)
