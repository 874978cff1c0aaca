"""Pseudo views: rotations and slerp against known values, the path through the training cameras, the walk's
step bound, the refresh schedule, masking; and the trainer's extra-loss hook."""

from __future__ import annotations

import math

import pytest
import torch

from sparsesplat.priors.pseudo_views import (
    PseudoViewConfig,
    PseudoViewScheduler,
    interpolate_path,
    masked_target,
    matrix_to_quat,
    quat_to_matrix,
    refresh_count,
    slerp,
    walk,
)
from sparsesplat.rasterizer import Cameras


def _rot_y(deg):
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)


def _cams(centres, yaws):
    """Cameras at ``centres`` (camera->world rotation = yaw about y)."""
    V = []
    for c, y in zip(centres, yaws):
        R = _rot_y(y)  # camera->world
        M = torch.eye(4, dtype=torch.float64)
        M[:3, :3] = R.T
        M[:3, 3] = -R.T @ torch.tensor(c, dtype=torch.float64)
        V.append(M)
    K = torch.tensor([[40.0, 0, 16], [0, 40, 12], [0, 0, 1]], dtype=torch.float64).repeat(len(V), 1, 1)
    return Cameras(torch.stack(V), K, 32, 24)


def test_quaternion_round_trip_and_known_values():
    R = torch.stack([_rot_y(d) for d in (0, 30, 90, 179, -120)])
    assert torch.allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-9)
    q = matrix_to_quat(_rot_y(90)[None])[0]  # 90 degrees about y: (cos 45, 0, sin 45, 0)
    assert torch.allclose(q, torch.tensor([math.sqrt(0.5), 0, math.sqrt(0.5), 0], dtype=torch.float64), atol=1e-12)


def test_slerp_halfway_is_half_the_angle():
    q0 = matrix_to_quat(_rot_y(10)[None])
    q1 = matrix_to_quat(_rot_y(70)[None])
    mid = slerp(q0, q1, torch.tensor([0.5], dtype=torch.float64))
    assert torch.allclose(quat_to_matrix(mid)[0], _rot_y(40), atol=1e-9)
    # the ends, and identical inputs (the small-angle branch)
    assert torch.allclose(slerp(q0, q1, torch.tensor([0.0], dtype=torch.float64)), q0)
    assert torch.allclose(slerp(q0, q0, torch.tensor([0.3], dtype=torch.float64)), q0)


def test_path_passes_through_the_training_cameras_in_chain_order():
    cams = _cams([(2, 0, 0), (0, 0, 0), (1, 0, 0)], [20, -20, 0])  # chain: x = 2 -> 1 -> 0 (or reverse)
    path = interpolate_path(cams, 5)
    xs = path.centers[:, 0].tolist()
    assert xs == pytest.approx([2, 1.5, 1, 0.5, 0]) or xs == pytest.approx([0, 0.5, 1, 1.5, 2])
    # the middle of the path is camera 3 exactly; the quarter point has the halfway rotation
    k = xs.index(pytest.approx(1))
    assert torch.allclose(path.viewmats[k], cams.viewmats[2], atol=1e-9)
    R_quarter = path.camtoworlds[1, :3, :3]
    assert torch.allclose(R_quarter, _rot_y(10) if xs[0] == pytest.approx(2) else _rot_y(-10), atol=1e-9)


def test_walk_moves_at_most_max_step_and_reaches_the_target():
    start = _cams([(0, 0, 0), (0, 0, 0)], [0, 0])
    target = _cams([(1.2, 0, 0), (0.3, 0, 0)], [60, 30])
    cur, steps = start, []
    for _ in range(4):
        nxt = walk(cur, target, 0.5)
        steps.append((nxt.centers - cur.centers).norm(dim=1))
        cur = nxt
    assert all(float(s.max()) <= 0.5 + 1e-9 for s in steps)
    assert steps[0].tolist() == pytest.approx([0.5, 0.3])
    # rotation moves by the same fraction: 0.5/1.2 of 60 degrees for the first camera
    assert torch.allclose(walk(start, target, 0.5).camtoworlds[0, :3, :3], _rot_y(25), atol=1e-9)
    assert torch.allclose(cur.viewmats, target.viewmats, atol=1e-9)


def test_schedule_refreshes_and_masks():
    cams = _cams([(0, 0, 0), (1, 0, 0), (2, 0, 0)], [0, 0, 0])
    images = torch.rand(3, 24, 32, 3)
    cfg = PseudoViewConfig(num_targets=4, start=0.3, refresh_every=0, probability=1.0)
    sched = PseudoViewScheduler(cams, images, cfg)
    iters = 1000  # refresh every 200 steps from step 300
    assert not sched.due(299, iters) and sched.due(300, iters) and sched.due(301, iters)  # none yet: due
    # a refresh renders the walked cameras, repairs them with the nearest photos as references
    seen = {}

    def render_fn(c):
        seen["cams"] = c
        a = torch.zeros(len(c), 24, 32, 1)
        a[:, :12] = 1
        return torch.full((len(c), 24, 32, 3), 0.5), a

    def repair_fn(r, refs, c):
        seen["refs"] = refs
        return r + 0.1

    views = sched.refresh(render_fn, repair_fn)
    due = [s for s in range(iters) if sched.due(s, iters)]
    assert due == [300, 500, 700, 900] and refresh_count(iters, cfg) == 4
    assert len(views.images) == 4 and torch.allclose(views.images, torch.full_like(views.images, 0.6))
    assert views.masks[:, :12].min() == 1 and views.masks[:, 12:].max() == 0
    assert seen["refs"].shape == (4, 24, 32, 3)
    assert sched.sample(torch.Generator().manual_seed(0)) in range(4)
    # masked target: pseudo ground truth inside the mask, the render (no gradient) outside
    img = torch.rand(24, 32, 3, requires_grad=True)
    t = masked_target(views.images[0], img, views.masks[0])
    assert torch.equal(t[:12], views.images[0][:12]) and torch.equal(t[12:], img.detach()[12:])
    ((img - t).abs().sum()).backward()
    assert img.grad[12:].abs().max() == 0 and img.grad[:12].abs().min() == 1


def test_trainer_extra_loss_hook_sees_the_step_and_adds_its_gradient():

    import numpy as np

    from sparsesplat.recon.kinds.gaussian import GaussianModel
    from sparsesplat.recon.trainer import TrainConfig, Trainer

    cams = _cams([(0, 0, -3), (0.5, 0, -3)], [0, 0]).to(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(200, 3, generator=g) - 0.5).numpy()
    cfg = TrainConfig(iters=3, sh_degree=0, dropout=0.0, checkpoint_every=0)
    images = torch.rand(2, 24, 32, 3, generator=g)
    calls = []

    class Pull:
        needs_depth = True

        def __call__(self, ctx):
            calls.append((ctx.step, ctx.view, ctx.out.depths is not None))
            return 100.0 * ctx.prims.means[:, 0].sum()  # pushes every x coordinate down

    model = GaussianModel.create(pts, np.full((200, 3), 0.5), cfg, 1.0)
    before = model.params["means"][:, 0].detach().clone()
    tr = Trainer(model, images, cams, torch.zeros(3), cfg, extra_losses=[Pull()])
    tr.train()
    assert [c[0] for c in calls] == [0, 1, 2] and all(c[2] for c in calls)
    assert (model.params["means"][:, 0] < before).float().mean() > 0.95
