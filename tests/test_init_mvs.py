"""Plane-sweep multi-view stereo (recon/init_mvs.py) against the exact depth of ray-cast synthetic scenes."""

import numpy as np
import pytest
import torch

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.rasterizer import Cameras
from sparsesplat.recon.init_mvs import MVSConfig, _BestPlane, depth_range, plane_count, plane_sweep_points


@pytest.fixture(scope="module")
def forward():
    return make_scene(3, 96, 72, kind="forward", n_points=50)


def _depth_errors(res, scene):
    """(relative depth errors of every kept pixel, fraction of surface pixels kept per view)."""
    gt = scene.depths[..., 0]
    errs, cover = [], []
    for i, d in enumerate(res.depths):
        m = (d > 0) & np.isfinite(gt[i])
        errs.append(np.abs(d[m] - gt[i][m]) / gt[i][m])
        cover.append(m.sum() / np.isfinite(gt[i]).sum())
    return np.concatenate(errs), np.array(cover)


def test_three_forward_views_give_dense_accurate_depth(forward):
    """Three LLFF-like views of textured boxes, spheres and a wall: 50 sparse points (what SIFT gives on
    such views) become thousands of points whose depth matches the ray-cast depth (measured: coverage
    0.43-0.58 of the surface pixels, median error 0.3%, 82% within 5%; the rest sit at object outlines)."""
    res = plane_sweep_points(forward.images, forward.cameras, forward.points)
    err, cover = _depth_errors(res, forward)
    assert len(res.points) > 5000 and res.points.shape == res.colors.shape
    assert cover.min() > 0.3
    assert np.median(err) < 0.01 and np.mean(err < 0.05) > 0.75
    # fused points sit where the cameras look: in front of every camera
    V = forward.cameras.viewmats.numpy()
    z = np.einsum("vij,mj->vmi", V[:, :3, :3], res.points.astype(np.float64))[..., 2] + V[:, None, 2, 3]
    assert (z > 0).all()


def test_flat_images_and_wrong_cameras_give_no_points(forward):
    """No texture, no depth; and a camera tilted by 3 degrees (its epipolar lines off by ~5 pixels) breaks
    the matches and the cross-view agreement."""
    flat = np.full_like(forward.images, 0.5)
    assert len(plane_sweep_points(flat, forward.cameras, forward.points).points) == 0
    good = plane_sweep_points(forward.images, forward.cameras, forward.points)
    V = forward.cameras.viewmats.clone()
    a = np.radians(3.0)
    turn = torch.tensor([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], dtype=V.dtype)
    V[1, :3, :3] = turn @ V[1, :3, :3]
    V[1, :3, 3] = turn @ V[1, :3, 3]
    bad = plane_sweep_points(forward.images, Cameras(V, forward.cameras.Ks, 96, 72), forward.points)
    kept = [(d > 0).sum() for d in good.depths], [(d > 0).sum() for d in bad.depths]
    assert kept[1][1] < 0.4 * kept[0][1], kept  # the tilted view agrees with no other (measured: 0.25)
    assert len(bad.points) < 0.7 * len(good.points)


def test_masks_drop_the_background_and_the_outline(forward):
    """Input masks (Blender alpha) keep points off the background and off the outline band, whose patches
    straddle two depths."""
    masks = np.zeros(forward.images.shape[:3] + (1,), np.float32)
    masks[:, 20:60, 30:70] = 1.0
    res = plane_sweep_points(forward.images, forward.cameras, forward.points, masks)
    for d in res.depths:
        assert (d[:23] == 0).all() and (d[57:] == 0).all() and (d[:, :33] == 0).all() and (d[:, 67:] == 0).all()
        assert (d[23:57, 33:67] > 0).mean() > 0.3


def test_depth_range_from_points_bounds_or_the_cameras(forward):
    V = forward.cameras.viewmats.numpy()
    K = forward.cameras.Ks.numpy()
    lo, hi = depth_range(V, K, 0, 96, 72, forward.points.astype(np.float64), None, None)
    gt = forward.depths[0][np.isfinite(forward.depths[0])]
    assert lo < np.percentile(gt, 5) and hi > np.percentile(gt, 95)
    assert depth_range(V, K, 0, 96, 72, None, 1.5, 9.0) == (1.5, 9.0)
    lo, hi = depth_range(V, K, 0, 96, 72, None, None, None)
    assert 0 < lo < gt.min() and hi > gt.max()


def test_downscaling_keeps_the_geometry(forward):
    """Images larger than max_side are area-downscaled with K scaled to match: the same surfaces."""
    res = plane_sweep_points(forward.images, forward.cameras, forward.points, cfg=MVSConfig(max_side=64))
    assert res.stats["resolution"] == (64, 48)
    full = plane_sweep_points(forward.images, forward.cameras, forward.points)
    # every downscaled point lies near a full-resolution one
    a, b = torch.as_tensor(res.points), torch.as_tensor(full.points)
    nearest = torch.cdist(a, b).min(dim=1).values
    extent = float(np.ptp(full.points, axis=0).max())
    assert torch.quantile(nearest, 0.8) < 0.02 * extent


def test_streamed_winner_matches_the_cost_volume():
    """The sweep keeps no (planes, H, W) cost volume: planes stream through ``_BestPlane``, which must give
    what the volume would: the winning plane and cost, its neighbours' costs and the best cost more than 3
    planes away (checked against argmax over a random volume, planes counted from both ends)."""
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(41, 9, 11, generator=g) * 2 - 1
    wta = _BestPlane(9, 11, "cpu")
    for c in cost:
        wta.add(c)
    best, idx = cost.max(dim=0)
    assert torch.equal(wta.idx, idx) and torch.equal(wta.best, best)
    p = torch.arange(41)[:, None, None]
    far = torch.where((p - idx[None]).abs() > 3, cost, torch.full_like(cost, -1.0)).max(dim=0).values
    assert torch.equal(wta.second(), far)
    below = torch.where(idx > 0, cost.gather(0, (idx - 1).clamp_min(0)[None])[0], torch.full_like(best, -1.0))
    above = torch.where(idx < 40, cost.gather(0, (idx + 1).clamp_max(40)[None])[0], torch.full_like(best, -1.0))
    assert torch.equal(wta.c_m, below) and torch.equal(wta.c_p, above)


def test_plane_count_bounds_the_epipolar_step(forward):
    """Auto plane count: between consecutive planes no pixel of the reference moves further than
    ``plane_step_px`` along its epipolar line in a source (checked at every pixel, not the 9x9 probe grid;
    a tenth of slack for the probe's interpolation); a fixed count is taken as given."""
    cams = forward.cameras
    V, K = cams.viewmats.double(), cams.Ks.double()
    W, H = cams.width, cams.height
    lo, hi = depth_range(V.numpy(), K.numpy(), 0, W, H, forward.points.astype(np.float64), None, None)
    cfg = MVSConfig(plane_step_px=0.5, min_planes=2, max_planes=100_000)
    n = plane_count(0, [1, 2], V, K, W, H, lo, hi, cfg)
    assert plane_count(0, [1, 2], V, K, W, H, lo, hi, MVSConfig(planes=77)) == 77
    assert 2 < n < 5000
    inv = torch.linspace(1 / lo, 1 / hi, n, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(H * W, dtype=torch.float64)], -1)
    X = (pix @ torch.linalg.inv(K[0]).T)[None] / inv[:, None, None]  # (planes, pixels, 3) camera 0
    Xw = (X - V[0, :3, 3]) @ V[0, :3, :3]
    worst = 0.0
    for s in (1, 2):
        q = (Xw @ V[s, :3, :3].T + V[s, :3, 3]) @ K[s].T
        uv = q[..., :2] / q[..., 2:]
        inside = (q[..., 2] > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
        step = (uv[1:] - uv[:-1]).norm(dim=-1)[inside[1:] & inside[:-1]]
        worst = max(worst, float(step.max()))
    assert worst <= 1.1 * cfg.plane_step_px, worst
    # and halving the step doubles the planes (it is a count of steps, not a fixed number)
    n2 = plane_count(0, [1, 2], V, K, W, H, lo, hi, MVSConfig(plane_step_px=0.25, min_planes=2, max_planes=100_000))
    assert abs(n2 - 2 * n) <= 2


def test_planes_too_far_apart_lose_surfaces(forward):
    """A pixel that jumps several pixels from one plane to the next steps over its texture's NCC peak: with
    64 planes (steps up to ~4 px here) the sweep keeps fewer surface pixels, less accurately, than with the
    count that keeps steps within 1.5 px (~170 planes; measured: 0.36 against 0.50 of the surface kept,
    median depth error 0.63% against 0.35%)."""
    coarse = plane_sweep_points(forward.images, forward.cameras, forward.points, cfg=MVSConfig(planes=64))
    auto = plane_sweep_points(forward.images, forward.cameras, forward.points)
    err_c, cover_c = _depth_errors(coarse, forward)
    err_a, cover_a = _depth_errors(auto, forward)
    assert cover_a.mean() > 1.25 * cover_c.mean(), (cover_a, cover_c)
    assert np.median(err_a) < 0.75 * np.median(err_c)
