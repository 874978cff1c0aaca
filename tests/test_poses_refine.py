"""Camera-pose refinement: the SE(3) correction's gradient through render() (float64 finite differences on
the torch backend, and the cpu backend held to it), and recovering a perturbed pose with the scene frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sparsesplat.datasets.synthetic import make_cameras
from sparsesplat.rasterizer import Gaussians, render
from sparsesplat.rasterizer.backends import is_available
from sparsesplat.recon.poses.refine import PoseRefiner, align_test_pose, corrected, so3_exp


def _scene(n=300, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([2.0, 2.0, 1.0], dtype=dtype)
    means[:, 2] += 0.4
    return Gaussians(means, torch.randn(n, 4, generator=g, dtype=dtype),
                     torch.rand(n, 3, generator=g, dtype=dtype) * 0.08 + 0.03,
                     torch.rand(n, generator=g, dtype=dtype) * 0.5 + 0.4,
                     colors=torch.rand(n, 3, generator=g, dtype=dtype))


def test_so3_exp_matches_scipy_and_is_smooth_at_zero():
    w = torch.tensor([[0.3, -0.5, 0.2], [1e-9, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(so3_exp(w).numpy(), Rotation.from_rotvec(w.numpy()).as_matrix(), atol=1e-12)
    z = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    so3_exp(z)[0, 0, 1].backward()  # d R01 / d w_z = -1 at zero
    assert z.grad[0, 2].item() == pytest.approx(-1.0)


def test_pose_gradient_matches_finite_differences():
    g = _scene(120)
    cam = make_cameras(1, 24, 18, "orbit").to(dtype=torch.float64)
    target = torch.rand(1, 18, 24, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(delta):
        out = render(g, corrected(cam, delta), backend="torch", render_mode="RGB")
        return ((out.colors - target) ** 2).sum()

    delta = torch.tensor([[0.01, -0.02, 0.015, 0.02, -0.01, 0.03]], dtype=torch.float64, requires_grad=True)
    loss(delta).backward()
    eps = 1e-6
    fd = torch.zeros(6, dtype=torch.float64)
    for k in range(6):
        d = torch.zeros(1, 6, dtype=torch.float64)
        d[0, k] = eps
        with torch.no_grad():
            fd[k] = (loss(delta + d) - loss(delta - d)) / (2 * eps)
    np.testing.assert_allclose(delta.grad[0].numpy(), fd.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not is_available("cpu"), reason="cpu backend not built here")
def test_cpu_backend_gives_the_same_pose_gradient():
    g = _scene(200, torch.float32)
    cam = make_cameras(1, 48, 36, "orbit").to(dtype=torch.float32)
    grads = []
    for backend in ("torch", "cpu"):
        delta = torch.zeros(1, 6, requires_grad=True)
        out = render(g, corrected(cam, delta), backend=backend, render_mode="RGB")
        (out.colors * torch.linspace(0, 1, 3)).sum().backward()
        grads.append(delta.grad[0].clone())
    assert grads[0].abs().max() > 0
    np.testing.assert_allclose(grads[1].numpy(), grads[0].numpy(), rtol=2e-3, atol=1e-3 * grads[0].abs().max().item())


def test_align_test_pose_recovers_a_perturbed_camera():
    backend = "cpu" if is_available("cpu") else "torch"
    g = _scene(600, torch.float32)
    cam = make_cameras(1, 64, 48, "orbit").to(dtype=torch.float32)
    with torch.no_grad():
        photo = render(g, cam, backend=backend, render_mode="RGB").colors[0]
    off = corrected(cam, torch.tensor([[0.03, -0.02, 0.02, 0.05, 0.04, -0.03]]))
    fixed = align_test_pose(g, off, photo, torch.zeros(3), steps=150, lr=3e-3, backend=backend)
    V0, V1, Vt = off.viewmats[0].double(), fixed.viewmats[0].double(), cam.viewmats[0].double()
    rot = lambda A, B: np.degrees(Rotation.from_matrix((A[:3, :3] @ B[:3, :3].T).numpy()).magnitude())
    assert rot(V0, Vt) > 2.0
    assert rot(V1, Vt) < 0.25 * rot(V0, Vt)
    assert (V1[:3, 3] - Vt[:3, 3]).norm() < 0.25 * (V0[:3, 3] - Vt[:3, 3]).norm()


def test_refiner_moves_only_after_start_and_only_views_it_saw():
    cam = make_cameras(3, 32, 24, "orbit").to(dtype=torch.float32)
    ref = PoseRefiner(3, lr_rot=1e-2, lr_trans=1e-2, start=1)
    g = _scene(100, torch.float32)
    assert torch.equal(ref.camera(cam, 0).viewmats, cam[0].viewmats)  # before start: the given pose
    ref.step()
    out = render(g, ref.camera(cam, 1), backend="torch", render_mode="RGB")
    out.colors.mean().backward()
    ref.step()
    moved = ref.delta.detach().abs().sum(dim=1)
    assert moved[1] > 0 and moved[0] == 0 and moved[2] == 0
    assert torch.allclose(ref.cameras(cam).viewmats[0], cam.viewmats[0])


def test_refiner_state_round_trip_continues_exactly():
    cam = make_cameras(3, 32, 24, "orbit").to(dtype=torch.float32)
    g = _scene(100, torch.float32)

    def step(ref, v):
        out = render(g, ref.camera(cam, v), backend="torch", render_mode="RGB")
        out.colors.mean().backward()
        ref.step()

    a = PoseRefiner(3, lr_rot=1e-2, lr_trans=1e-2)
    for v in (0, 1):
        step(a, v)
    b = PoseRefiner(3, lr_rot=1e-2, lr_trans=1e-2)
    b.load_state_dict(a.state_dict())
    assert b.steps == 2 and torch.equal(b.delta, a.delta) and a.delta.abs().sum() > 0
    step(a, 1), step(b, 1)  # Adam's moments came along: the next step is the same
    assert torch.equal(b.delta, a.delta)
    with pytest.raises(ValueError, match="views"):
        PoseRefiner(4).load_state_dict(a.state_dict())
