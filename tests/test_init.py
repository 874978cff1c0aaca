"""recon.init: normalization, triangulation with known cameras, random fallback, initializer registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.datasets import SceneData
from sparsesplat.datasets.synthetic import cast, make_cameras, make_scene
from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.cameras import look_at
from sparsesplat.recon import init
from sparsesplat.recon.init_points import triangulate_tracks


def scene_data(images, cameras, points=None, test_ids=(), near=None, far=None) -> SceneData:
    n = len(images)
    return SceneData(
        images=torch.as_tensor(np.asarray(images, dtype=np.float32)), masks=None, cameras=cameras.to(dtype=torch.float32),
        names=[f"view_{k:03d}.png" for k in range(n)], near=near, far=far, background=torch.zeros(3),
        white_background=False, train_ids=[k for k in range(n) if k not in test_ids], test_ids=list(test_ids),
        points=points, point_colors=None if points is None else np.full_like(points, 0.5),
    )


def project(cams: Cameras, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    V, K = cams.viewmats.double().numpy(), cams.Ks.double().numpy()
    Xc = np.einsum("vij,nj->vni", V[:, :3, :3], X) + V[:, None, :3, 3]
    return np.einsum("vij,vnj->vni", K[:, :2, :2], Xc[..., :2] / Xc[..., 2:]) + K[:, None, :2, 2], Xc[..., 2]


@pytest.fixture(scope="module")
def forward():
    # 320x240: at 160x120 SIFT's localization (~0.4 px) alone is ~1% of depth for two-view points
    return make_scene(n_views=4, width=320, height=240, kind="forward", supersample=1)


def test_triangulated_points_lie_on_the_true_surfaces(forward):
    tri = triangulate_tracks(forward.images, forward.cameras)
    assert len(tri.points) > 300 and (tri.track_lengths >= 3).sum() > 100
    # exact ground truth: cast a ray from each camera towards the point; a point on a surface seen by that
    # camera is exactly the first hit
    rel = []
    for c in forward.cameras.centers.numpy():
        d = tri.points.astype(np.float64) - c
        dist = np.linalg.norm(d, axis=1)
        t, _, _ = cast(np.broadcast_to(c, d.shape).copy(), d / dist[:, None], forward.kind)
        rel.append(np.abs(dist - t) / dist)
    rel = np.min(rel, axis=0)
    assert np.median(rel) < 0.01
    assert (rel < 0.02).mean() >= 0.9, f"{(rel < 0.02).mean():.1%} of points within 2% of the depth"
    assert np.median(tri.errors) < 0.5
    # colours: the mean of the views, close to the surface colour there
    assert tri.colors.min() >= 0 and tri.colors.max() <= 1
    # deterministic
    again = triangulate_tracks(forward.images, forward.cameras)
    np.testing.assert_array_equal(again.points, tri.points)


def test_normalization_keeps_projections_and_round_trips():
    cams = make_cameras(5, 64, 48, kind="orbit")
    # the same rig in an arbitrary user frame: x_user = 37 x + offset, so world->camera [R | 37 t - R offset]
    offset = np.array([1000.0, -250.0, 42.0])
    V = cams.viewmats.numpy().copy()
    V[:, :3, 3] = 37.0 * V[:, :3, 3] - V[:, :3, :3] @ offset
    user = Cameras(torch.as_tensor(V), cams.Ks, 64, 48)
    X = np.random.default_rng(0).uniform(-1, 1, (50, 3)) * 37.0 + offset
    norm = init.normalize_scene(user, X)
    c = cams.centers.numpy()
    radius = np.linalg.norm(c - c.mean(0), axis=1).max()
    assert norm.rule == "cameras" and norm.scale == pytest.approx(1.1 * radius * 37.0)
    np.testing.assert_allclose(norm.centre, 37.0 * c.mean(0) + offset, atol=1e-9)
    assert norm.scene_scale == 1.0
    ncams = norm.apply_cameras(user)
    Xn = norm.apply_points(X)
    np.testing.assert_allclose((norm.T @ np.c_[X, np.ones(len(X))].T).T[:, :3], Xn, atol=1e-12)
    uv, z = project(user, X)
    uvn, zn = project(ncams, Xn)
    np.testing.assert_allclose(uvn, uv, atol=1e-8)
    np.testing.assert_allclose(zn, z / norm.scale, rtol=1e-10)
    R = ncams.viewmats[:, :3, :3].numpy()
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-10)
    assert np.linalg.norm(ncams.centers.numpy(), axis=1).max() == pytest.approx(1 / 1.1)
    np.testing.assert_allclose(norm.invert_points(Xn), X, atol=1e-9)
    np.testing.assert_allclose(norm.invert_cameras(ncams).viewmats.numpy(), user.viewmats.numpy(), atol=1e-9)
    # tensors keep their type and dtype
    t = norm.apply_points(torch.as_tensor(X, dtype=torch.float32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


def test_normalization_guards_tiny_baselines():
    eyes = [(0.0, -4.0, 1.0), (0.01, -4.0, 1.0), (-0.01, -4.0, 1.0)]
    views = torch.stack([look_at(e, (0.0, 0.0, 0.5)) for e in eyes])
    K = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]], dtype=torch.float64).expand(3, 3, 3)
    cams = Cameras(views, K.clone(), 64, 48)
    by_cams = init.normalize_scene(cams)
    assert by_cams.rule == "cameras" and by_cams.scale == pytest.approx(0.011, rel=1e-6)
    pts = np.random.default_rng(1).normal((0.0, 0.0, 0.5), 0.3, (200, 3))
    by_points = init.normalize_scene(cams, pts)
    assert by_points.rule == "points" and 0.3 < by_points.scale < 0.5  # ~0.1 x the ~4-unit viewing distance
    by_bounds = init.normalize_scene(cams, near=2.0, far=8.0)
    assert by_bounds.rule == "near/far" and by_bounds.scale == pytest.approx(0.4)


def test_blank_scene_falls_back_to_random_points():
    cams = make_cameras(3, 64, 48, kind="forward")
    scene = scene_data(np.full((3, 48, 64, 3), 0.5, np.float32), cams)
    res = init.initial_points(scene, method="auto", n_random=500, seed=3)
    assert res.method_used == "random" and len(res.points) == 500
    assert "only 0 points" in res.message and "falling back" in res.message
    lo, hi = init.random_bounds(scene.cameras)
    assert np.all(res.points >= lo - 1e-5) and np.all(res.points <= hi + 1e-5)
    # the box surrounds what the cameras look at
    assert np.all(lo < [0.0, 0.4, 0.45]) and np.all(hi > [0.0, 0.4, 0.45])


def test_random_points_and_bounds():
    p, c = init.random_points(1000, (-1.3, -1.3, -1.3), (1.3, 1.3, 1.3), seed=7)
    assert p.shape == c.shape == (1000, 3) and p.dtype == c.dtype == np.float32
    assert p.min() >= -1.3 and p.max() <= 1.3 and c.min() >= 0 and c.max() <= 1
    np.testing.assert_array_equal(p, init.random_points(1000, -1.3, 1.3, seed=7)[0])
    lo, hi = init.random_bounds(make_cameras(8, 64, 48, kind="orbit"))
    np.testing.assert_allclose((lo + hi) / 2, [0.0, 0.0, 0.3], atol=1e-6)  # the orbit's look-at point
    np.testing.assert_allclose(hi - lo, 2 * 0.35 * 4.0, rtol=0.05)


def test_method_choice_sfm_registry_and_errors():
    cams = make_cameras(3, 32, 24, kind="forward")
    images = np.zeros((3, 24, 32, 3), np.float32)
    sfm = np.random.default_rng(0).normal(size=(150, 3)).astype(np.float32)
    res = init.initial_points(scene_data(images, cams, points=sfm), method="auto")
    assert res.method_used == "sfm" and len(res.points) == 150
    # with held-out views, SfM over all images would leak them: auto does not use it
    held_out = scene_data(images, cams, points=sfm, test_ids=[1])
    assert init.initial_points(held_out, method="auto", n_random=10).method_used == "random"
    assert "test views" in init.initial_points(held_out, method="sfm").message
    init.register_initializer("constant", lambda scene, ids, seed: (np.zeros((4, 3)), np.ones((4, 3))))
    try:
        res = init.initial_points(held_out, method="constant")
        assert res.method_used == "constant" and res.points.shape == (4, 3)
    finally:
        init.INITIALIZERS.pop("constant")
    with pytest.raises(ValueError, match="unknown initialization method"):
        init.initial_points(held_out, method="nope")
    with pytest.raises(ValueError, match="no SfM points"):
        init.initial_points(scene_data(images, cams), method="sfm")


@pytest.mark.needs_data
def test_fern_llff3_triangulation(data_dir):
    from sparsesplat.datasets import load

    path = data_dir / "llff" / "fern"
    if not path.is_dir():
        pytest.skip(f"fern not found at {path}")
    scene = load(path, protocol="llff3", downscale=8)
    ids = scene.train_ids
    tri = triangulate_tracks(scene.images[ids].numpy(), scene.cameras[ids])
    print(f"fern llff3: {len(tri.points)} points, median reprojection {np.median(tri.errors):.3f} px, "
          f"{tri.seconds}")
    assert len(tri.points) > 500
    assert np.median(tri.errors) < 1.0
    # in front of the cameras, within LLFF's depth bounds (with margin)
    _, z = project(scene.cameras[ids], tri.points.astype(np.float64))
    assert np.median(z) > scene.near * 0.9 and np.median(z) < scene.far


def _sphere_views(n_views=8, size=96, radius=0.8):
    """Exact silhouettes and two-coloured images (red where x > 0, blue elsewhere) of a sphere at the origin,
    by ray casting each pixel centre."""
    from sparsesplat.datasets.synthetic import make_cameras

    cams = make_cameras(n_views, size, size, kind="orbit")
    images, masks = [], []
    for v in range(n_views):
        K, c2w = cams.Ks[v].numpy(), np.linalg.inv(cams.viewmats[v].numpy())
        jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
        d = np.stack([jj, ii, np.ones_like(jj)], -1) @ np.linalg.inv(K).T @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = c2w[:3, 3]
        b = d @ o
        disc = b * b - (o @ o - radius**2)
        hit = disc > 0
        t = -b - np.sqrt(np.clip(disc, 0, None))
        x = o[0] + t * d[..., 0]
        img = np.where((x > 0)[..., None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]) * hit[..., None]
        images.append(img)
        masks.append(hit[..., None].astype(np.float32))
    return np.stack(images).astype(np.float32), np.stack(masks), cams


def test_visual_hull_contains_the_object_and_colours_each_side_from_the_views_that_see_it():
    from sparsesplat.recon.init import HullConfig, visual_hull_points

    radius = 0.8
    images, masks, cams = _sphere_views(radius=radius)
    pts, cols = visual_hull_points(images, masks, cams, max_points=20_000, cfg=HullConfig(fine_resolution=64))
    r = np.linalg.norm(pts, axis=1)
    step = 2 * r.max() / 64
    # the hull contains the sphere: no point is carved into it, and surface points hug it (8 views leave
    # cones above and below, so only most, not all, lie close)
    assert r.min() > radius - 2 * step
    assert np.median(r) < radius * 1.15
    # colours come from views that see the point: red on the x > 0 side, blue on the other (the cameras
    # orbit above the equator, so the upper half is the part they see)
    near = (r < radius + 2 * step) & (pts[:, 2] > 0)
    right, left = near & (pts[:, 0] > 0.4 * radius), near & (pts[:, 0] < -0.4 * radius)
    assert right.sum() > 50 and left.sum() > 50
    assert np.mean(cols[right, 0] > 0.8) > 0.9 and np.mean(cols[left, 2] > 0.8) > 0.9


def test_visual_hull_rejects_masks_that_disagree_with_the_cameras():
    from sparsesplat.recon.init import visual_hull_points

    images, masks, cams = _sphere_views(n_views=4, size=48)
    masks[0] = 0.0  # one view sees nothing: no voxel survives
    with pytest.raises(ValueError, match="carve the whole scene away"):
        visual_hull_points(images, masks, cams)


def test_auto_uses_the_hull_of_input_masks_only_when_triangulation_fails():
    """A flat-coloured sphere gives SIFT and stereo (inside the masks) nothing to match: auto falls back to the
    visual hull for a Blender scene (alpha is input) but never for DTU (masks are for evaluation only)."""
    images, masks, cams = _sphere_views(n_views=8, size=64)
    images = np.repeat(images.max(axis=-1, keepdims=True), 3, axis=-1)  # one colour: white on black
    scene = scene_data(images, cams)
    scene.masks = torch.as_tensor(masks)
    scene.source_format = "blender"
    r = init.initial_points(scene, method="auto", max_points=5000)
    assert r.method_used == "hull" and "0 plane-sweep stereo points" in r.message
    assert np.linalg.norm(r.points, axis=1).min() > 0.7  # on the hull of the 0.8-radius sphere, not inside
    scene.source_format = "dtu"  # the masks are not input: neither the hull nor mask-limited stereo
    r = init.initial_points(scene, method="auto", n_random=1000)
    assert r.method_used != "hull" and "hull" not in r.message
    with pytest.raises(ValueError, match="needs foreground masks that are part of the input"):
        init.initial_points(scene, method="hull")
