"""Training convexes: Fibonacci-sphere initialization, the paper's split, the PLY layout round trip, exports
in the user's frame that render the same, and training that improves held-out views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.rasterizer import Cameras, Convexes, render
from sparsesplat.rasterizer.ply import PlyFormatError
from sparsesplat.rasterizer.kinds.convex.ply import load_convexes_ply, save_convexes_ply
from sparsesplat.recon.kinds.convex import ConvexModel, ConvexSettings, fibonacci_sphere
from sparsesplat.recon.init import normalize_scene
from sparsesplat.recon.metrics import psnr
from sparsesplat.recon.kinds.convex import split_children
from sparsesplat.recon.trainer import Trainer, TrainConfig

from convex_scenes import random_convexes
from scenes import orbit_cameras


def test_fibonacci_sphere_is_unit_and_spread():
    v = fibonacci_sphere(6)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert v[0, 2] == 1.0 and v[-1, 2] == -1.0
    d = np.linalg.norm(v[:, None] - v[None], axis=-1) + 2 * np.eye(6)
    assert d.min() > 0.85  # no two points bunch up (6 points: nearest pairs 0.894 apart)


def test_initial_convexes_sit_on_spheres_around_the_points():
    pts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    s = ConvexSettings()
    m = ConvexModel.from_points(pts, np.full((5, 3), 0.5), 1, s, 1.0)
    cv = m.activated()
    assert cv.points.shape == (5, 6, 3)
    assert torch.allclose(cv.centers, torch.tensor(pts, dtype=torch.float32), atol=1e-6)
    fib = fibonacci_sphere(6)
    # the first point's neighbours are at 1, 1, 1: radius = 1.2 * 1
    assert np.allclose(cv.points[0].detach().numpy(), 1.2 * (fib - fib.mean(0)), atol=1e-6)
    assert torch.allclose(cv.opacities, torch.full((5,), 0.1))


def test_split_makes_p_shrunk_children_with_half_opacity():
    P = 6
    pts = torch.randn(3, P, 3)
    params = {"points": pts, "delta": torch.zeros(3), "sigma": torch.ones(3), "opacities": torch.logit(torch.tensor([0.8, 0.5, 0.3])),
              "sh0": torch.randn(3, 1, 3), "shN": torch.zeros(3, 3, 3)}
    sel = torch.tensor([True, False, True])
    kids = split_children(params, sel, 0.63, 1.0, 0.5)
    assert kids["points"].shape == (2 * P, P, 3)
    c = pts[0].mean(0)
    for i in range(P):
        child = kids["points"][2 * i]  # children of convex 0 at rows i * M
        assert torch.allclose(child.mean(0), pts[0, i], atol=1e-5)  # centred on the parent's point i
        assert torch.allclose(child - child.mean(0), 0.63 * (pts[0] - c), atol=1e-5)
    assert torch.allclose(torch.sigmoid(kids["opacities"][:2]), torch.tensor([0.4, 0.15]), atol=1e-6)
    assert torch.allclose(kids["delta"], torch.full((2 * P,), -float(np.log(0.63))))
    assert torch.equal(kids["sh0"][1], params["sh0"][2])


def test_ply_round_trip_is_exact(tmp_path):
    cv = random_convexes(30, seed=2, sh_degree=2, hard_cases=False)
    path = tmp_path / "sub" / "scene.ply"
    save_convexes_ply(path, cv)
    back = load_convexes_ply(path)
    for a, b in ((cv.points, back.points), (cv.delta, back.delta), (cv.sigma, back.sigma),
                 (cv.opacities, back.opacities), (cv.sh, back.sh)):
        assert torch.equal(a, b)
    with pytest.raises(PlyFormatError, match="convex"):
        from sparsesplat.rasterizer.ply import save_points_ply

        save_points_ply(tmp_path / "pts.ply", np.zeros((3, 3)), np.zeros((3, 3)))
        load_convexes_ply(tmp_path / "pts.ply")


def test_export_in_user_frame_renders_the_same(tmp_path):
    scene = make_scene(n_views=3, width=48, height=36, kind="forward", n_points=200, supersample=1)
    cams = scene.cameras.to(dtype=torch.float32)
    norm = normalize_scene(cams, scene.points)
    model = ConvexModel.create(norm.apply_points(scene.points), scene.point_colors, TrainConfig(sh_degree=1, init_opacity=0.8),
                               norm.scene_scale)
    user = model.export(tmp_path / "scene.ply", norm)
    a = render(model.activated(), norm.apply_cameras(cams), backend="torch")
    b = render(load_convexes_ply(tmp_path / "scene.ply"), cams, backend="torch")
    assert a.alphas.max() > 0.5
    assert (a.colors - b.colors).abs().max() < 1e-3 and (a.alphas - b.alphas).abs().max() < 1e-3
    assert len(user) == len(model)


@pytest.mark.slow
def test_training_improves_held_out_views():
    scene = make_scene(n_views=7, width=64, height=48, kind="forward", n_points=1500, supersample=2)
    train, test = [0, 2, 4, 6], [1, 5]
    # the plain photometric objective: the sparse-view regularizers (on by default) narrow the train/held-out
    # gap this test reads as "the fit works"
    cfg = TrainConfig(iters=300, sh_every=100, checkpoint_every=0, binocular_weight=0.0, opacity_decay=0.0)
    cfg.convex.strategy.refine_start_iter, cfg.convex.strategy.refine_stop_iter = 100, 250
    cfg.convex.reference_focal = 70.0  # the 64x48 test cameras' focal length
    cams = scene.cameras.to(dtype=torch.float32)
    norm = normalize_scene(cams[train], scene.points)
    cams_n = norm.apply_cameras(cams)
    model = ConvexModel.create(norm.apply_points(scene.points), scene.point_colors, cfg, norm.scene_scale)
    images = torch.from_numpy(scene.images)
    tr = Trainer(model, images[train], cams_n[train], torch.zeros(3), cfg)

    def score(ids):
        with torch.no_grad():
            out = render(tr.model.activated(), cams_n[ids], render_mode="RGB")
        return float(psnr(out.colors.clamp(0, 1), images[ids]).mean())

    before = score(test)
    tr.train()
    after = score(test)
    assert after > before + 3.0, (before, after)
    assert score(train) > after


def test_strategy_calibrates_sigma_to_the_view_depth_once():
    from types import SimpleNamespace

    from sparsesplat.recon.kinds.convex import ConvexStrategy

    m = ConvexModel.from_points(np.random.default_rng(0).normal(size=(4, 3)), np.full((4, 3), 0.5), 0,
                                ConvexSettings(), 1.0)
    strat = ConvexStrategy(init_sharpness=0.5, refine_start_iter=10**6)
    state = strat.initialize_state(m)
    depths = torch.tensor([[2.0, 4.0, 0.0, 8.0], [4.0, 4.0, 0.0, 0.0]])
    meta = SimpleNamespace(depths=depths, visibility=depths > 0, max_weight=torch.zeros(2, 4))
    strat.step_post_backward(m, state, 0, meta)
    sigma = torch.exp(m.params["sigma"]).detach()
    assert torch.allclose(sigma[[0, 1, 3]], torch.tensor([0.5 / 3.0, 0.5 / 4.0, 0.5 / 8.0]))
    assert sigma[2] == pytest.approx(1.0)  # not seen yet: untouched
    meta.depths = 2 * depths
    strat.step_post_backward(m, state, 1, meta)
    assert torch.allclose(torch.exp(m.params["sigma"]).detach()[[0, 1, 3]], sigma[[0, 1, 3]])  # only once
