"""Two fields judged by each other (CoR-GS): pseudo cameras near the training rig, co-pruning of unconfirmed
primitives with their optimizer and strategy state, the render agreement term, and checkpoints of both."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.cameras import look_at
from sparsesplat.recon.cotraining import (CoTrainer, focus_depth, mean_pose, random_pseudo_camera,
                                          second_field_config, unmatched)
from sparsesplat.recon.kinds.gaussian import GaussianModel
from sparsesplat.recon.init import normalize_scene
from sparsesplat.recon.metrics import ssim
from sparsesplat.recon.trainer import Trainer, TrainConfig, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny_scene():
    return make_scene(n_views=7, width=64, height=48, kind="forward", n_points=1500, supersample=2)


def _cotrainer(scene, cfg, train=(0, 2, 4, 6)):
    train = list(train)
    cams = scene.cameras.to(dtype=torch.float32)
    norm = normalize_scene(cams[train], scene.points)
    images = torch.from_numpy(scene.images)[train]

    def field(c):
        model = GaussianModel.from_points(norm.apply_points(scene.points), scene.point_colors, 1, c.lrs,
                                          norm.scene_scale)
        return Trainer(model, images, norm.apply_cameras(cams)[train], torch.zeros(3), c)

    return CoTrainer([field(cfg), field(second_field_config(cfg))], cfg)


def test_pseudo_cameras_stay_in_the_rigs_box_and_look_at_the_focus():
    target = np.array([0.0, 0.0, 5.0])
    centres = [np.array([x, y, 0.0]) for x, y in [(-1, -0.5), (1, -0.5), (0.2, 0.5)]]
    V = torch.stack([look_at(c, target, up=(0.0, -1.0, 0.0)) for c in centres])  # image down is world +y
    K = torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]).repeat(3, 1, 1)
    cams = Cameras(V.float(), K, 64, 48)
    centre, R = mean_pose(cams)
    assert torch.allclose(centre, torch.tensor([0.2 / 3, -0.5 / 3, 0.0], dtype=torch.float64), atol=1e-6)
    assert float(R[:, 2] @ torch.tensor([0.0, 0, 1], dtype=torch.float64)) > 0.99
    extent = ((cams.centers.double() - centre) @ R).abs().amax(0)
    assert float(extent[0]) == pytest.approx(1 + 0.2 / 3, abs=2e-3)  # the mean frame is tilted a little
    g = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(50):
        cam = random_pseudo_camera(cams, 5.0, g)
        c = cam.centers[0].double()
        local = (c - centre) @ R
        assert bool((local.abs() <= extent + 1e-5).all())  # inside the box the rig spans
        # the focus point, 5 ahead of the mean camera, projects to the principal point
        focus = centre + 5.0 * R[:, 2]
        p = cam.viewmats[0].double() @ torch.cat([focus, torch.ones(1, dtype=torch.float64)])
        uv = (cam.Ks[0].double() @ p[:3])[:2] / p[2]
        assert torch.allclose(uv, torch.tensor([32.0, 24.0], dtype=torch.float64), atol=1e-3)
        # and the camera keeps the rig's up: its image y axis points along the rig's mean "down"
        assert float(cam.camtoworlds[0, :3, 1].double() @ R[:, 1]) > 0.9
        seen.append(local)
    spread = torch.stack(seen)
    assert float(spread[:, 0].max() - spread[:, 0].min()) > 1.0  # they do move around the box
    pts = torch.tensor([[0.0, 0, 5], [0, 0, 7], [0, 0, 9], [0, 0, -3]])
    assert focus_depth(cams, pts) == pytest.approx(7.0, abs=2e-2)  # the median of those in front


def test_unmatched_points_have_no_partner_within_the_distance():
    a = torch.tensor([[0.0, 0, 0], [1, 0, 0], [5, 5, 5]])
    b = torch.tensor([[0.05, 0, 0], [1.2, 0, 0]])
    assert unmatched(a, b, 0.1).tolist() == [False, True, True]
    assert unmatched(a, b, 0.3).tolist() == [False, False, True]
    assert unmatched(a, b[:0], 0.3).tolist() == [True, True, True]


def test_coprune_removes_unconfirmed_primitives_with_their_state(tiny_scene):
    # both fields start from the same points; after two steps each primitive's twin is still within 0.005
    cfg = TrainConfig(iters=2, sh_every=100, checkpoint_every=0, fields=2, coprune_every=0, coprune_distance=0.005)
    co = _cotrainer(tiny_scene, cfg)
    for _ in range(2):
        co.train_step()  # Adam moments and densification statistics exist now
    f0, f1 = co.trainers
    n = len(f0.model)
    scale = f0.model.scene_scale
    with torch.no_grad():  # move 10 of field 1's primitives far away: they and their twins lose confirmation
        f1.model.params["means"][:10] += 100 * scale
    means0 = f0.model.params["means"].detach().clone()
    moments0 = f0.model.optimizers["means"].state[f0.model.params["means"]]["exp_avg"].clone()
    f0.strategy_state["grad2d"] = torch.arange(n, dtype=torch.float32)
    counts = co.coprune()
    assert counts == [10, 10]
    kept = torch.ones(n, dtype=torch.bool)
    kept[:10] = False
    assert torch.equal(f0.model.params["means"].detach(), means0[kept])
    assert torch.equal(f0.model.optimizers["means"].state[f0.model.params["means"]]["exp_avg"], moments0[kept])
    assert torch.equal(f0.strategy_state["grad2d"], torch.arange(n, dtype=torch.float32)[kept])
    assert len(f1.model) == n - 10 and len(f0.strategy_state["count"]) == n - 10


def test_coregularization_pulls_each_field_towards_the_other_on_one_pseudo_view(tiny_scene, monkeypatch):
    import sparsesplat.recon.cotraining as cot

    cfg = TrainConfig(iters=10, sh_every=100, checkpoint_every=0, fields=2, coreg_start=0.0, coreg_weight=2.0,
                      dropout=0.0, binocular_weight=0.0)
    co = _cotrainer(tiny_scene, cfg)
    renders = []
    real = cot.render

    def spy(prims, cam, **kw):
        out = real(prims, cam, **kw)
        renders.append((cam.viewmats.clone(), out.colors[0]))
        return out

    monkeypatch.setattr(cot, "render", spy)
    values = []
    for t in co.trainers:
        real_loss = t.extra_losses[-1]
        t.extra_losses[-1] = lambda ctx, f=real_loss: values.append(f(ctx)) or values[-1]
    f1 = co.trainers[1]
    before = copy.deepcopy(f1.model)  # its parameters are updated in place by the step
    co.train_step()
    # field 0 renders itself and field 1 at one pseudo camera, field 1 renders itself there: 3 renders
    assert len(renders) == 3 and all(torch.equal(v, renders[0][0]) for v, _ in renders)
    train_cam_views = co.trainers[0].cameras.viewmats
    assert not any(torch.allclose(renders[0][0][0], v) for v in train_cam_views)
    mine0, theirs0, mine1 = renders[0][1], renders[1][1], renders[2][1]
    w = cfg.ssim_weight
    expect0 = 2.0 * ((1 - w) * (mine0 - theirs0).abs().mean() + w * (1 - ssim(mine0, theirs0)))
    expect1 = 2.0 * ((1 - w) * (mine1 - mine0).abs().mean() + w * (1 - ssim(mine1, mine0)))
    assert float(values[0].detach()) == pytest.approx(float(expect0.detach()), rel=1e-5)
    assert float(values[1].detach()) == pytest.approx(float(expect1.detach()), rel=1e-5)
    # field 1's own render of the pseudo view came from its parameters before its update
    with torch.no_grad():
        again = real(before.activated(), cot.Cameras(renders[0][0], co.trainers[0].cameras.Ks[:1], 64, 48),
                     background=torch.zeros(3), sh_degree=0, render_mode="RGB").colors[0]
    assert torch.allclose(again, theirs0, atol=1e-5)


def test_cotraining_checkpoint_resumes_both_fields_exactly(tiny_scene, tmp_path):
    cfg = TrainConfig(iters=40, sh_every=100, checkpoint_every=0, fields=2, coprune_every=10, coreg_start=0.0)
    cfg.default.refine_start_iter, cfg.default.refine_stop_iter = 5, 30
    cfg.default.refine_every = 10
    co = _cotrainer(tiny_scene, cfg)
    torch.manual_seed(1)
    while co.step < 20:
        co.train_step()
    save_checkpoint(co, tmp_path / "c.pt")
    co.train()
    assert sum(co.pruned) > 0
    resumed = _cotrainer(tiny_scene, cfg)
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt"))
    resumed.train()
    assert resumed.pruned == co.pruned
    for a, b in zip(co.trainers, resumed.trainers):
        for k in a.model.params:
            assert a.model.params[k].shape == b.model.params[k].shape, k
            assert torch.allclose(a.model.params[k], b.model.params[k], atol=1e-5), k
    single = co.trainers[0]
    with pytest.raises(ValueError, match="one field"):
        resumed.load_state_dict(single.state_dict())


def test_two_fields_of_triangles_coprune_by_their_centroids(tiny_scene):
    """Co-training is not Gaussian-only: triangles (no means) co-prune by their centroids."""
    from sparsesplat.recon.kinds.triangle import TriangleModel

    cfg = TrainConfig(iters=2, sh_every=100, checkpoint_every=0, fields=2, coprune_every=0, coprune_distance=0.005)
    train = [0, 2, 4, 6]
    cams = tiny_scene.cameras.to(dtype=torch.float32)
    norm = normalize_scene(cams[train], tiny_scene.points)
    images = torch.from_numpy(tiny_scene.images)[train]

    def field(c):
        model = TriangleModel.create(norm.apply_points(tiny_scene.points), tiny_scene.point_colors, c,
                                     norm.scene_scale)
        return Trainer(model, images, norm.apply_cameras(cams)[train], torch.zeros(3), c)

    co = CoTrainer([field(cfg), field(second_field_config(cfg))], cfg)
    f0, f1 = co.trainers  # both start with a triangle centred on each point (their orientations differ)
    n = len(f0.model)
    assert co.coprune() == [0, 0]
    with torch.no_grad():  # move 7 of field 1's triangles far away: they and their twins lose confirmation
        f1.model.params["vertices"][:7] += 100 * f1.model.scene_scale
    assert co.coprune() == [7, 7] and len(f0.model) == len(f1.model) == n - 7
