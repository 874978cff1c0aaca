"""Learned initializers (``--init mono-depth``): monocular depth aligned to the sparse points.

References are independent of the code under test: the procedural scene's exact depth maps (an oracle depth
model returns them as relative inverse depth with a different unknown scale and shift per view), hand-made
line fits, and a tiny random transformers model saved to a folder and loaded by path as a user's would be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sparsesplat.datasets import SceneData
from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.recon.init import INITIALIZERS, initial_points
from sparsesplat.recon.poses.learned_init import (LearnedInitializer, MonoDepthConfig, MonoDepthInitializer,
                                                  fit_scale_shift)

from test_poses_dense import surface_error


@pytest.fixture(scope="module")
def scene():
    return make_scene(3, 160, 120, "forward", supersample=1, n_points=300)


class OracleDisparity:
    """Relative inverse depth with a per-view scale and shift, negated to depth order (what a relative depth
    model gives through ``TransformersDepthPrior``); ``corrupt`` pulls a patch of view 0 30% closer."""

    name = "oracle"
    output = "disparity"

    def __init__(self, depths: np.ndarray, corrupt: bool = False):
        self.depths, self.corrupt = depths[..., 0].astype(np.float64), corrupt

    def __call__(self, images, names=None):
        out = []
        for k in range(len(images)):
            d = self.depths[int(Path(names[k]).stem)].copy()
            if self.corrupt and int(Path(names[k]).stem) == 0:
                H, W = d.shape
                d[H // 3: H // 2, W // 3: W // 2] *= 0.7
            s, t = 2.0 + k, 0.1 * (k + 1)
            with np.errstate(divide="ignore"):
                out.append(-(s / d + t))
        return torch.from_numpy(np.stack(out)).float()[..., None]


def names_of(n):
    return [f"{i}.png" for i in range(n)]


def test_fit_scale_shift_ignores_outliers():
    rng = np.random.default_rng(0)
    x = rng.random(200)
    y = 3.0 * x - 0.5
    y[:20] += rng.normal(0, 5, 20)  # 10% gross outliers
    a, b, inliers = fit_scale_shift(x, y)
    assert abs(a - 3.0) < 1e-6 and abs(b + 0.5) < 1e-6
    assert inliers[20:].all() and inliers[:20].sum() <= 2  # outliers that happen to land near the line stay


def test_aligned_monocular_points_lie_on_the_true_surface(scene):
    init = MonoDepthInitializer(OracleDisparity(scene.depths), MonoDepthConfig(stride=2))
    assert isinstance(init, LearnedInitializer) and init.space == "disparity"
    pts, cols, stats = init(scene.images, scene.cameras, scene.points, names=names_of(3))
    assert stats["views_aligned"] == 3
    assert all(f["median_rel_err"] < 1e-3 for f in stats["fits"])
    assert len(pts) > 20 * len(scene.points)
    err = surface_error(pts.astype(np.float64), scene)
    # float32 scene + nearest-pixel lookup: a fraction of a percent; sky and depth edges are removed
    assert np.median(err) < 2e-3
    assert np.mean(err < 0.01) > 0.97
    # colours are the photos' at the points
    from scipy.spatial import cKDTree

    d, idx = cKDTree(scene.points).query(pts)
    near = d < 0.03
    assert near.sum() > 100
    assert np.median(np.abs(cols[near] - scene.point_colors[idx[near]]).mean(axis=1)) < 0.1


def test_free_space_check_removes_a_wrong_patch(scene):
    wrong = OracleDisparity(scene.depths, corrupt=True)
    strict = MonoDepthInitializer(wrong, MonoDepthConfig(stride=2))
    loose = MonoDepthInitializer(wrong, MonoDepthConfig(stride=2, free_space_tol=1e9))
    p_strict, _, _ = strict(scene.images, scene.cameras, scene.points, names=names_of(3))
    p_loose, _, _ = loose(scene.images, scene.cameras, scene.points, names=names_of(3))
    bad_loose = np.mean(surface_error(p_loose.astype(np.float64), scene) > 0.1)
    bad_strict = np.mean(surface_error(p_strict.astype(np.float64), scene) > 0.1)
    # the patch is ~3% of view 0's pixels, 30% off (measured: 85 of 13.7k points without the check, 0 with it)
    assert bad_loose > 0.004
    assert bad_strict < 0.1 * bad_loose
    assert len(p_strict) > 0.97 * len(p_loose)  # and it keeps the rest


def test_metric_depth_models_are_fitted_in_depth(scene):
    class Metric:
        name, output = "metric", "depth"

        def __call__(self, images, names=None):
            d = np.stack([scene.depths[int(Path(n).stem), ..., 0] for n in names]).astype(np.float64)
            return torch.from_numpy(np.where(np.isfinite(d), 0.5 * d + 0.2, np.inf)).float()[..., None]

    init = MonoDepthInitializer(Metric())
    assert init.space == "depth"
    pts, _, stats = init(scene.images, scene.cameras, scene.points, names=names_of(3))
    assert stats["views_aligned"] == 3
    assert np.median(surface_error(pts.astype(np.float64), scene)) < 2e-3


def test_views_without_enough_sparse_points_are_skipped(scene):
    init = MonoDepthInitializer(OracleDisparity(scene.depths))
    unseen = scene.points[:50] + np.array([0.0, 0.0, -1000.0], np.float32)  # all behind the cameras
    pts, _, stats = init(scene.images, scene.cameras, unseen, names=names_of(3))
    assert stats["views_aligned"] == 0 and len(pts) == 0
    assert [f["sparse_seen"] for f in stats["fits"]] == [0, 0, 0]


def _scene_data(s, with_points=True):
    n = len(s.images)
    return SceneData(
        images=torch.from_numpy(s.images), masks=None, cameras=s.cameras.to(dtype=torch.float32),
        names=names_of(n), near=None, far=None, background=torch.zeros(3), white_background=False,
        train_ids=list(range(n)), test_ids=[],
        points=s.points if with_points else None, point_colors=s.point_colors if with_points else None)


@pytest.mark.filterwarnings("ignore")
def test_mono_depth_through_initial_points_with_a_saved_tiny_model(scene, tmp_path):
    pytest.importorskip("transformers")
    from sparsesplat.priors.testing import make_tiny_dpt

    model = make_tiny_dpt(tmp_path / "tiny-dpt")
    assert "mono-depth" in INITIALIZERS
    data = _scene_data(scene)
    cache = tmp_path / "depth-cache"
    init = initial_points(data, method="mono-depth", options={"depth_model": str(model), "cache_dir": cache})
    # the sparse points come first, then the aligned monocular points; every point is finite
    assert init.method_used == "mono-depth" and len(init.points) > len(scene.points)
    np.testing.assert_array_equal(init.points[: len(scene.points)], scene.points)
    assert np.isfinite(init.points).all() and ((init.colors >= 0) & (init.colors <= 1)).all()
    assert "monocular-depth points" in init.message and "aligned views" in init.message
    assert len(list(cache.glob("*.npy"))) == 3  # predictions cached per photo for a re-run


def test_mono_depth_says_what_is_missing(scene, tmp_path):
    data = _scene_data(scene)
    with pytest.raises(ValueError, match="--depth-model"):
        initial_points(data, method="mono-depth", options={})
    pytest.importorskip("transformers")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        initial_points(data, method="mono-depth", options={"depth_model": str(tmp_path / "no-such-model")})


@pytest.mark.filterwarnings("ignore")
def test_reconstruct_with_init_mono_depth(tmp_path):
    pytest.importorskip("transformers")
    from sparsesplat.datasets.writers import write_colmap_text
    from sparsesplat.priors.testing import make_tiny_dpt
    from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
    from sparsesplat.recon.trainer import TrainConfig

    small = make_scene(n_views=3, width=64, height=48, kind="forward", n_points=800)
    data = write_colmap_text(tmp_path / "scene", small)
    model = make_tiny_dpt(tmp_path / "dpt")
    out = tmp_path / "run"
    lines: list[str] = []
    cfg = ReconstructConfig(data=data, out=out, init="mono-depth", depth_model=str(model),
                            train=TrainConfig(iters=5, sh_degree=0, checkpoint_every=0))
    metrics = reconstruct(cfg, log=lines.append)
    assert metrics["init_method"] == "mono-depth"
    # no views held out: the scene's own 800 SfM points, then the aligned monocular points
    assert metrics["init_points"] > 1000
    assert any("monocular-depth points" in ln for ln in lines)
    assert len(list((out / "depth").glob("*.npy"))) == 3
