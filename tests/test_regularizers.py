"""Sparse-view regularizers: DropGaussian keeps expected opacity; the binocular and multi-view warps are
geometrically exact (checked against the ray-cast ground truth of a synthetic scene)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.datasets import synthetic
from sparsesplat.rasterizer import Gaussians
from sparsesplat.recon.patches import area_resize
from sparsesplat.recon.regularizers import (drop_primitives, multiview_photo_loss, shifted_camera,
                                           warp_by_depth, warp_from_shifted)


def test_drop_primitives_preserves_expected_opacity():
    n = 20_000
    g = Gaussians(torch.zeros(n, 3), torch.zeros(n, 4), torch.ones(n, 3), torch.full((n,), 0.4), colors=torch.zeros(n, 3))
    out = drop_primitives(g, 0.2, torch.Generator().manual_seed(0))
    dropped = (out.opacities == 0).float().mean()
    assert abs(float(dropped) - 0.2) < 0.01
    assert torch.allclose(out.opacities[out.opacities > 0], torch.tensor(0.5))
    assert abs(float(out.opacities.mean()) - 0.4) < 0.01
    assert drop_primitives(g, 0.0, torch.Generator()) is g


def test_shifted_camera_moves_along_its_own_x_axis():
    cams = synthetic.make_cameras(2, 40, 30, "forward")
    moved = shifted_camera(cams, 0.3)
    delta = moved.centers - cams.centers
    x_axes = cams.viewmats[:, 0, :3]  # camera x axis in world coordinates
    assert torch.allclose(delta, 0.3 * x_axes, atol=1e-9)


def test_warp_reproduces_the_reference_view_from_ray_cast_ground_truth():
    cam = synthetic.make_cameras(3, 96, 72, "forward")[1]
    b = 0.15
    other = shifted_camera(cam, b)
    img_ref, alpha_ref, depth_ref = synthetic.render(cam, "forward", supersample=1)
    img_other, _, _ = synthetic.render(other, "forward", supersample=1)
    depth = torch.from_numpy(np.where(np.isfinite(depth_ref[0]), depth_ref[0], 0.0)).double()
    warped, valid = warp_from_shifted(torch.from_numpy(img_other[0]).double(), depth, cam.Ks[0], b)
    err = (warped - torch.from_numpy(img_ref[0]).double()).abs().mean(-1)[valid[..., 0] > 0]
    assert valid.mean() > 0.8
    # textures resample bilinearly and occlusion edges differ; most pixels agree closely
    assert float(err.median()) < 0.03 and float((err < 0.1).double().mean()) > 0.9
    # the wrong baseline sign must do clearly worse (the test can fail)
    wrong, valid2 = warp_from_shifted(torch.from_numpy(img_other[0]).double(), depth, cam.Ks[0], -b)
    err2 = (wrong - torch.from_numpy(img_ref[0]).double()).abs().mean(-1)[valid2[..., 0] > 0]
    assert float(err2.median()) > 2 * float(err.median())


@pytest.mark.parametrize("direction", [(1.0, 0.0), (0.0, 1.0), (0.6, -0.8)])
def test_warp_samples_where_the_shifted_camera_sees_each_depth_point(direction):
    """--binocular-directions any: for a camera moved along any direction of its image plane, the warp samples the
    shifted image where the shifted camera projects each reference pixel's back-projected point (checked with a
    coordinate ramp as the shifted image, which bilinear sampling reproduces exactly, against the full
    projection)."""
    cam = synthetic.make_cameras(3, 96, 72, "forward")[1]
    b = 0.15
    other = shifted_camera(cam, b, direction)
    axes = cam.viewmats[0, :2, :3]  # the camera's x and y axes in world coordinates
    moved = b * (direction[0] * axes[0] + direction[1] * axes[1])
    assert torch.allclose(other.centers - cam.centers, moved, atol=1e-9)
    H, W = cam.height, cam.width
    depth = 2.0 + torch.rand(H, W, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    ramp = torch.stack([u, v, torch.zeros_like(u)], dim=-1)  # the shifted image holds its own pixel coordinates
    warped, valid = warp_from_shifted(ramp, depth, cam.Ks[0], b, direction)
    K = cam.Ks[0].double()
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], dim=-1)
    world = (rays * depth - cam.viewmats[0, :3, 3].double()) @ cam.viewmats[0, :3, :3].double()  # R^T (x - t)
    x = world @ other.viewmats[0, :3, :3].double().T + other.viewmats[0, :3, 3].double()
    proj = torch.stack([K[0, 0] * x[..., 0] / x[..., 2] + K[0, 2], K[1, 1] * x[..., 1] / x[..., 2] + K[1, 2]], dim=-1)
    inner = ((valid[..., 0] > 0) & (proj[..., 0] > 1) & (proj[..., 0] < W - 1)
             & (proj[..., 1] > 1) & (proj[..., 1] < H - 1))
    assert inner.double().mean() > 0.5
    torch.testing.assert_close(warped[..., :2][inner], proj[inner], atol=1e-6, rtol=0)
    # a sideways warp of a camera that moved otherwise samples elsewhere (the test can fail)
    if direction != (1.0, 0.0):
        wrong, _ = warp_from_shifted(ramp, depth, cam.Ks[0], b)
        assert float((wrong[..., :2][inner] - proj[inner]).abs().max()) > 1.0


def test_area_resize_averages_the_pixels_each_output_pixel_covers():
    img = torch.rand(6, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    half = area_resize(img, 3, 4)
    np.testing.assert_allclose(half.numpy(), img.numpy().reshape(3, 2, 4, 2, 3).mean(axis=(1, 3)), atol=1e-12)
    assert area_resize(img, 6, 8) is img
    batch = torch.stack([img, 1 - img])[None]  # leading dims (1, 2) pass through
    halves = area_resize(batch, 3, 4)
    assert halves.shape == (1, 2, 3, 4, 3)
    np.testing.assert_allclose(halves[0, 1].numpy(), 1 - half.numpy(), atol=1e-12)


def test_half_resolution_warp_reproduces_the_reference_view():
    """The binocular term at --binocular-resolution 0.5: the shifted camera rendered at half size, the reference
    depth and photo area-averaged to that size, warped with the half-size intrinsics."""
    cam = synthetic.make_cameras(3, 96, 72, "forward")[1]
    b = 0.15
    small = shifted_camera(cam, b).scaled(0.5)
    img_ref, _, depth_ref = synthetic.render(cam, "forward", supersample=1)
    img_small, _, _ = synthetic.render(small, "forward", supersample=2)
    depth = torch.from_numpy(np.where(np.isfinite(depth_ref[0]), depth_ref[0], 0.0)).double()
    ref = area_resize(torch.from_numpy(img_ref[0]).double(), small.height, small.width)
    depth = area_resize(depth, small.height, small.width)
    src = torch.from_numpy(img_small[0]).double()

    def error(baseline):
        warped, valid = warp_from_shifted(src, depth, small.Ks[0], baseline)
        return (warped - ref).abs().mean(-1)[valid[..., 0] > 0], valid

    err, valid = error(b)
    assert (small.width, small.height) == (48, 36) and valid.mean() > 0.8
    assert float(err.median()) < 0.03 and float((err < 0.1).double().mean()) > 0.85
    # full-size intrinsics on the half-size image put every pixel at the wrong disparity
    wrong, valid2 = warp_from_shifted(src, depth, cam.Ks[0], b)
    err2 = (wrong - ref).abs().mean(-1)[valid2[..., 0] > 0]
    assert float(err2.median()) > 2 * float(err.median())


def _ray_cast_views(n=3, w=96, h=72):
    cams = synthetic.make_cameras(n, w, h, "forward")
    img, alpha, depth = synthetic.render(cams, "forward", supersample=1)
    depth = np.where(np.isfinite(depth), depth, 0.0)
    return cams, torch.from_numpy(img).double(), torch.from_numpy(alpha).double(), torch.from_numpy(depth).double()


def test_depth_warp_from_another_camera_reproduces_the_reference_view():
    cams, img, _, depth = _ray_cast_views()
    ref, src = 1, 0
    args = (cams.Ks[ref].double(), cams.viewmats[ref].double(), cams.Ks[src].double(), cams.viewmats[src].double())
    warped, valid = warp_by_depth(img[src], depth[ref], *args)
    err = (warped - img[ref]).abs().mean(-1)[valid]
    assert valid.double().mean() > 0.7
    # the rest are points the source camera sees occluded, with a different colour (a wide baseline here)
    assert float(err.median()) < 0.03 and float((err < 0.1).double().mean()) > 0.75
    wrong, valid2 = warp_by_depth(img[src], depth[ref] * 1.15, *args)
    assert float((wrong - img[ref]).abs().mean(-1)[valid2].median()) > 2 * float(err.median())


def test_multiview_photo_loss_is_lowest_at_the_true_depth_and_its_gradient_leads_there():
    cams, img, alpha, depth = _ray_cast_views()
    ref = 1
    sources = [(img[s], cams.Ks[ref].double(), cams.viewmats[ref].double(), cams.Ks[s].double(),
                cams.viewmats[s].double()) for s in (0, 2)]
    # partly transparent pixels: the expected depth (render mode ED) is already the drawn surface's depth
    a = (alpha[ref] > 0.5).double() * 0.75

    def loss(scale):
        d = (depth[ref] * scale).clone().requires_grad_(True)
        value = multiview_photo_loss(d, a, img[ref], sources)
        value.backward()
        return float(value.detach()), d.grad

    at_truth, _ = loss(1.0)
    for scale in (0.9, 0.96, 1.04, 1.1):
        assert loss(scale)[0] > at_truth + 0.02, scale
    # a small step down the gradient from a depth 3% too far lowers the loss (only the depth gets a gradient)
    far, grad = loss(1.03)
    d = depth[ref] * 1.03 - 0.05 * grad / grad.abs().max()
    assert float(multiview_photo_loss(d, a, img[ref], sources)) < far
    # no sources: zero, with a gradient path
    z = multiview_photo_loss(depth[ref].clone().requires_grad_(True), a, img[ref], [])
    assert float(z.detach()) == 0.0 and z.requires_grad


def test_stereo_depth_loss_is_the_relative_error_where_stereo_knows_the_depth():
    from sparsesplat.recon.regularizers import stereo_depth_loss

    target = torch.tensor([[2.0, 0.0], [4.0, 0.0]]).reshape(2, 2, 1)  # 0 = unknown
    rendered = torch.tensor([[3.0, 100.0], [2.0, -5.0]], requires_grad=True).reshape(2, 2, 1)
    loss = stereo_depth_loss(rendered, target)
    assert float(loss) == pytest.approx((1.0 / 2 + 2.0 / 4) / 2)
    (g,) = torch.autograd.grad(loss, rendered)
    # unknown pixels get no gradient; known ones sign(d - t) / (t * count)
    assert g.reshape(-1).tolist() == pytest.approx([1 / 4, 0.0, -1 / 8, 0.0])
    assert float(stereo_depth_loss(rendered, torch.zeros(2, 2, 1))) == 0.0


def test_background_alpha_loss_weighs_pixels_by_their_closeness_to_the_background():
    from sparsesplat.recon.regularizers import background_alpha_loss

    photo = torch.tensor([[[0.0, 0.0, 0.0], [0.05, 0.0, 0.02]], [[0.5, 0.5, 0.5], [0.0, 0.2, 0.0]]])
    alpha = torch.ones(2, 2, 1, requires_grad=True)
    loss = background_alpha_loss(alpha, photo, torch.zeros(3), tolerance=0.1)
    # weights 1, 0.5 (largest channel difference 0.05), 0, 0
    assert float(loss) == pytest.approx((1 + 0.5) / 4)
    (g,) = torch.autograd.grad(loss, alpha)
    assert g.reshape(-1).tolist() == pytest.approx([0.25, 0.125, 0.0, 0.0])
    white = background_alpha_loss(alpha, torch.ones(2, 2, 3), torch.ones(3), tolerance=0.1)
    assert float(white) == pytest.approx(1.0)


def test_backdrop_is_the_background_coloured_region_that_reaches_the_border():
    from sparsesplat.recon.regularizers import backdrop_weights

    photo = torch.full((8, 10, 3), 0.5)
    photo[:2] = 0.04  # a dark backdrop along the top edge, within tolerance 0.1
    photo[0, 9] = 0.2  # one backdrop pixel too bright to count
    photo[4:6, 3:6] = 0.0  # a black handle inside the object: exactly the colour, but enclosed
    photo[2, 0] = 0.09  # a dark pixel joined to the backdrop: part of it
    w = backdrop_weights(photo, torch.zeros(3), tolerance=0.1)
    expected = torch.zeros(8, 10)
    expected[:2] = 1
    expected[0, 9] = 0
    expected[2, 0] = 1
    assert w.shape == (8, 10, 1)
    assert torch.equal(w[..., 0], expected)
    white = torch.ones(8, 10, 3)
    white[3:5, 3:5] = 0.3  # Blender's white surround around an object: all of it backdrop but the object
    w = backdrop_weights(white, torch.ones(3), tolerance=0.1)
    assert int(w.sum()) == 80 - 4 and float(w[3:5, 3:5].sum()) == 0.0


def test_anisotropy_loss_costs_only_the_excess_ratio_of_gaussians_and_nothing_for_other_kinds():
    from sparsesplat.recon.kinds.gaussian import GaussianModel, LearningRates

    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float64)
    model = GaussianModel.from_points(pts, np.full((3, 3), 0.5), 0, LearningRates(), 1.0)
    with torch.no_grad():
        model.params["scales"].copy_(torch.log(torch.tensor([[1.0, 1, 1], [100.0, 1, 1], [4.0, 0.5, 2]])))
    loss = model.shape_regularization(10.0)
    # only the second Gaussian is beyond 10:1, by log(100) - log(10)
    assert float(loss) == pytest.approx(np.log(10.0) / 3, rel=1e-5)
    loss.backward()
    g = model.params["scales"].grad
    assert np.allclose(g[1].tolist(), [1 / 3, -1 / 3, 0.0], atol=1e-6) and (g[[0, 2]] == 0).all()
    from sparsesplat.recon.primitive_model import PrimitiveModel

    assert PrimitiveModel.shape_regularization(model, 10.0) is None  # the default for kinds without scales


def test_depth_smoothness_is_free_at_photo_edges_and_scale_invariant():
    from sparsesplat.recon.regularizers import depth_smoothness_loss

    H, W = 8, 10
    alpha = torch.ones(H, W, 1)
    step = torch.ones(H, W, 1)
    step[:, W // 2:] = 3.0  # a depth jump between columns 4 and 5, relative size 2 / mean 2 = 1
    flat_photo = torch.full((H, W, 3), 0.5)
    edge_photo = flat_photo.clone()
    edge_photo[:, W // 2:] = 0.9  # the photo has an edge where the depth jumps
    assert float(depth_smoothness_loss(torch.full((H, W, 1), 2.0), alpha, flat_photo)) == 0.0
    # flat photo: H jumps of relative size 1 over H*(W-1) + (H-1)*W neighbour pairs of weight 1
    pairs = H * (W - 1) + (H - 1) * W
    assert float(depth_smoothness_loss(step, alpha, flat_photo)) == pytest.approx(H / pairs)
    w = np.exp(-10.0 * 0.4)
    expected = H * w / (pairs - H + H * w)
    assert float(depth_smoothness_loss(step, alpha, edge_photo)) == pytest.approx(expected, rel=1e-5)
    assert float(depth_smoothness_loss(step * 7.0, alpha, flat_photo)) == pytest.approx(H / pairs)
    # pixels where nothing is drawn do not count; an empty view costs nothing and keeps a gradient path
    empty = torch.zeros(H, W, 1)
    d = step.clone().requires_grad_(True)
    loss = depth_smoothness_loss(d, empty, flat_photo)
    assert float(loss) == 0.0
    loss.backward()
    assert d.grad is not None and float(d.grad.abs().sum()) == 0.0


def test_depth_smoothness_free_map_chooses_the_pixels_it_smooths():
    from sparsesplat.recon.regularizers import depth_smoothness_loss

    H, W = 8, 10
    alpha, photo = torch.ones(H, W, 1), torch.full((H, W, 3), 0.5)
    step = torch.ones(H, W, 1)
    step[:, W // 2:] = 3.0
    plain = float(depth_smoothness_loss(step, alpha, photo))
    assert float(depth_smoothness_loss(step, alpha, photo, free=torch.ones(H, W))) == pytest.approx(plain)
    # the jump's pixels confirmed by the photos: nothing left to smooth there
    free = torch.ones(H, W)
    free[:, W // 2 - 1:W // 2 + 1] = 0.0
    assert float(depth_smoothness_loss(step, alpha, photo, free=free)) == 0.0
    # one side of the jump unconfirmed: a step counts with the larger of its pixels' values
    free[:, W // 2] = 0.5
    # the jump (weight 0.5) over all steps at their ungated weight 1: a gate never raises the others' weight
    assert float(depth_smoothness_loss(step, alpha, photo, free=free)) == pytest.approx(
        H * 0.5 / (H * (W - 1) + (H - 1) * W), rel=1e-5)


def test_textureless_gate_is_one_on_flat_photo_regions_and_near_zero_on_texture():
    from sparsesplat.recon.regularizers import textureless

    H, W = 20, 40
    g = torch.Generator().manual_seed(0)
    photo = torch.full((H, W, 3), 0.9)
    photo[:, W // 2:] = torch.rand(H, W // 2, 1, generator=g).expand(-1, -1, 3)  # right half: noise
    gate = textureless(photo, scale=0.02, window=5)
    assert gate.shape == (H, W)
    assert torch.equal(gate[:, :W // 2 - 3], torch.ones(H, W // 2 - 3))  # flat, window clear of the noise
    assert float(gate[:, W // 2 + 3:].max()) < 1e-3  # mean step of uniform noise ~0.5: exp(-25)
    # a smooth ramp of step s per pixel is as textured as its steps: exp(-s / scale) away from the border
    ramp = torch.arange(W, dtype=torch.float32).mul(0.01).expand(H, W)[..., None].expand(H, W, 3)
    assert float(textureless(ramp, 0.02)[5, 20]) == pytest.approx(float(np.exp(-0.5)), rel=1e-5)


def test_inconsistency_is_low_where_the_photos_confirm_the_depth_and_high_where_they_do_not():
    from sparsesplat.recon.regularizers import inconsistency

    cams, img, alpha, depth = _ray_cast_views()
    ref = 1
    sources = [(img[s], cams.Ks[ref].double(), cams.viewmats[ref].double(), cams.Ks[s].double(),
                cams.viewmats[s].double()) for s in (0, 2)]
    drawn = alpha[ref, ..., 0] > 0.5
    right = inconsistency(depth[ref], img[ref], sources)
    wrong = inconsistency(depth[ref] * 1.1, img[ref], sources)
    assert float(right.min()) >= 0.0 and float(right.max()) <= 1.0
    assert float(right[drawn].median()) < 0.2 and float(wrong[drawn].median()) > float(right[drawn].median()) + 0.2


def test_depth_smoothness_gradient_matches_finite_differences():
    from sparsesplat.recon.regularizers import depth_smoothness_loss

    g = torch.Generator().manual_seed(0)
    depth = (1.0 + torch.rand(5, 6, 1, generator=g, dtype=torch.float64)).requires_grad_(True)
    alpha = 0.6 + 0.4 * torch.rand(5, 6, 1, generator=g, dtype=torch.float64)
    photo = torch.rand(5, 6, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: depth_smoothness_loss(d, alpha, photo), (depth,))


def test_second_order_depth_smoothness_leaves_planes_free():
    from sparsesplat.recon.regularizers import depth_smoothness_loss

    H, W = 6, 9
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                                indexing="ij")
    plane = (2.0 + 0.1 * cols + 0.05 * rows)[..., None]  # a tilted plane in front of the camera
    alpha, photo = torch.ones(H, W, 1, dtype=torch.float64), torch.full((H, W, 3), 0.5, dtype=torch.float64)
    assert float(depth_smoothness_loss(plane, alpha, photo, order=1)) > 0.01
    assert float(depth_smoothness_loss(plane, alpha, photo, order=2)) == pytest.approx(0.0, abs=1e-12)
    kink = plane.clone()
    kink[:, 5:] += 0.3 * (cols[:, 5:, None] - 4)  # the slope changes along the columns: one kink per row
    mean = float(kink.mean())
    pairs = H * (W - 2) + (H - 2) * W
    assert float(depth_smoothness_loss(kink, alpha, photo, order=2)) == pytest.approx(H * 0.3 / mean / pairs)
    g = torch.Generator().manual_seed(1)
    depth = (1.0 + torch.rand(5, 6, 1, generator=g, dtype=torch.float64)).requires_grad_(True)
    photo = torch.rand(5, 6, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: depth_smoothness_loss(d, alpha[:5, :6], photo, order=2), (depth,))
    with pytest.raises(ValueError, match="order"):
        depth_smoothness_loss(depth, alpha[:5, :6], photo, order=3)


def test_depth_smoothness_order_is_refused_before_training_when_out_of_range():
    from sparsesplat.recon.options import OptionRangeError, check_ranges
    from sparsesplat.recon.trainer import TrainConfig

    check_ranges(TrainConfig(depth_smoothness_order=2))
    with pytest.raises(OptionRangeError, match="--depth-smoothness-order must be in \\[1, 2\\]"):
        check_ranges(TrainConfig(depth_smoothness_order=3))
