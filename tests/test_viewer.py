"""The viewer without a browser: camera conversion, the render callback, colour maps, GUI state, camera paths."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sparsesplat.rasterizer import Cameras, Gaussians, render
from sparsesplat.rasterizer.cameras import intrinsics, look_at
from sparsesplat.rasterizer.registry import Kind, register, unregister
from sparsesplat.rasterizer.render import Rendered
from sparsesplat.viewer.camera import (ViewCamera, camera_to_view, frame_size, matrix_to_quat, quat_to_matrix,
                                       view_to_cameras)
from sparsesplat.viewer.camera_path import interpolate_path, slerp, write_video
from sparsesplat.viewer.render_view import (COLORMAPS, RenderSettings, apply_colormap, colorize_depth, depth_range,
                                            render_view, to_uint8)
from sparsesplat.viewer.splats import splat_arrays
from sparsesplat.viewer.state import StepRate, ViewerState

from viewer_helpers import ball_scene


def view_of(viewmat: torch.Tensor, fov_y: float, aspect: float) -> ViewCamera:
    """ViewCamera from a world->camera matrix, with scipy (independent of the viewer's quaternion code)."""
    c2w = np.linalg.inv(viewmat.double().numpy())
    x, y, z, w = Rotation.from_matrix(c2w[:3, :3]).as_quat()
    return ViewCamera((w, x, y, z), tuple(c2w[:3, 3]), fov_y, aspect)


# ------------------------------------------------------------------------------------------------ cameras


def test_quaternions_agree_with_scipy():
    rots = Rotation.random(50, random_state=3)
    for r in rots:
        x, y, z, w = r.as_quat()
        np.testing.assert_allclose(quat_to_matrix((w, x, y, z)), r.as_matrix(), atol=1e-12)
        q = matrix_to_quat(r.as_matrix())
        assert q[0] >= 0
        np.testing.assert_allclose(abs(q @ np.array([w, x, y, z])), 1.0, atol=1e-10)  # same rotation up to sign
    for angle in (0.0, np.pi, np.pi - 1e-9):  # the hard cases of the trace-based formula
        R = Rotation.from_rotvec([0.0, angle, 0.0]).as_matrix()
        np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-9)


def test_view_camera_projects_a_known_point():
    """A small Gaussian at a known point appears where the pinhole model with the vertical FOV says."""
    fov, W, H = math.radians(60.0), 120, 60
    view = ViewCamera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), fov, W / H)  # at the origin, looking along +z
    cams = view_to_cameras(view, W, H)
    X = np.array([0.5, -0.25, 3.0])  # right of and above the axis (y points down)
    g = Gaussians(torch.tensor(X[None], dtype=torch.float32), torch.tensor([[1.0, 0, 0, 0]]),
                  torch.full((1, 3), 0.02), torch.tensor([0.9]), colors=torch.ones(1, 3))
    a = render(g, cams, render_mode="RGB").alphas[0, ..., 0].numpy()
    rows, cols = np.mgrid[0:H, 0:W]
    u = (a * (cols + 0.5)).sum() / a.sum()
    v = (a * (rows + 0.5)).sum() / a.sum()
    f = (H / 2) / math.tan(fov / 2)
    assert u == pytest.approx(W / 2 + f * X[0] / X[2], abs=0.05)
    assert v == pytest.approx(H / 2 + f * X[1] / X[2], abs=0.05)
    assert v < H / 2  # world "up" here (-y) is up in the image


def test_camera_to_view_round_trip():
    V = look_at([3.0, -2.0, 1.0], [0.0, 0.0, 0.2])
    K = intrinsics(100.0, 100.0, 64.0, 40.0)
    cams = Cameras(V[None].float(), K[None].float(), 128, 80)
    view = camera_to_view(cams, 0)
    assert view.fov_y == pytest.approx(2 * math.atan(40 / 100))
    assert view.aspect == pytest.approx(128 / 80)
    back = view_to_cameras(view, 128, 80)
    torch.testing.assert_close(back.viewmats, cams.viewmats, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.Ks, cams.Ks, atol=1e-4, rtol=0)


@pytest.mark.parametrize("aspect,long_side,expected", [(1.5, 300, (300, 200)), (0.5, 300, (150, 300)),
                                                        (1.0, 64, (64, 64)), (1000.0, 10, (10, 1))])
def test_frame_size(aspect, long_side, expected):
    assert frame_size(aspect, long_side) == expected


# ------------------------------------------------------------------------------------- render callback


def test_render_view_equals_a_direct_render_of_the_same_camera():
    g = ball_scene(300)
    W, H = 96, 64
    f = (H / 2) / math.tan(math.radians(40) / 2)
    V = look_at([3.5, 1.0, 1.2], [0.0, 0.0, 0.0])
    cams = Cameras(V[None].float(), intrinsics(f, f, W / 2, H / 2)[None].float(), W, H)
    direct = render(g, cams, background=torch.tensor([0.2, 0.3, 0.4]), render_mode="RGB").colors[0].numpy()
    settings = RenderSettings(resolution=W, background=(0.2, 0.3, 0.4))
    frame = render_view(g, view_of(V, math.radians(40), W / H), settings)
    assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
    diff = np.abs(frame.image.astype(int) - to_uint8(direct).astype(int))
    assert diff.max() <= 1
    assert (frame.image != to_uint8(np.array([0.2, 0.3, 0.4]))).any(-1).mean() > 0.2  # the ball is in view


def test_moving_frames_are_scaled_down_and_keep_the_aspect():
    g = ball_scene(100)
    view = view_of(look_at([4.0, 0.0, 1.0], [0, 0, 0]), math.radians(50), 16 / 9)
    s = RenderSettings(resolution=320, moving_scale=0.25)
    still, moving = render_view(g, view, s), render_view(g, view, s, moving=True)
    assert still.image.shape[:2] == (180, 320)
    assert moving.image.shape[:2] == (45, 80)
    assert float(moving.cameras.Ks[0, 1, 1]) == pytest.approx(float(still.cameras.Ks[0, 1, 1]) / 4, rel=1e-6)


def wall(depth: float, half: float = 3.0, n: int = 41) -> Gaussians:
    """An opaque square of overlapping flat Gaussians at z = depth facing a camera at the origin."""
    xs = torch.linspace(-half, half, n)
    X, Y = torch.meshgrid(xs, xs, indexing="xy")
    means = torch.stack([X.flatten(), Y.flatten(), torch.full((n * n,), depth)], -1)
    m = len(means)
    step = 2 * half / (n - 1)
    return Gaussians(means, torch.tensor([[1.0, 0, 0, 0]]).expand(m, 4), torch.tensor([[step, step, 0.01]]).expand(m, 3),
                     torch.full((m,), 0.99), colors=torch.full((m, 3), 0.5))


def test_depth_mode_maps_expected_depth_through_the_colormap():
    view = ViewCamera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), math.radians(40), 1.0)
    bg = (1.0, 1.0, 1.0)
    s = RenderSettings(mode="Depth", resolution=48, near=2.0, far=6.0, colormap="rainbow", background=bg)
    frame = render_view(wall(4.0, half=0.5), view, s)
    cams = view_to_cameras(view, 48, 48)
    alpha = render(wall(4.0, half=0.5), cams).alphas[0, ..., 0].numpy()
    expected = colorize_depth(np.full((48, 48), 4.0), alpha, 2.0, 6.0, "rainbow", bg)
    assert np.abs(frame.image.astype(int) - to_uint8(expected).astype(int)).max() <= 1
    centre = frame.image[24, 24] / 255.0
    np.testing.assert_allclose(centre, apply_colormap(0.5, "rainbow"), atol=0.02)  # (4 - 2) / (6 - 2)
    np.testing.assert_allclose(frame.image[0, 0] / 255.0, bg, atol=1 / 255)  # nothing there: background
    # the automatic range brackets the wall's depth
    auto = render_view(wall(4.0, half=0.5), view, RenderSettings(mode="Depth", resolution=48))
    assert auto.near == pytest.approx(4.0, rel=1e-3) and auto.far == pytest.approx(4.0, abs=1e-3)


def test_colormaps():
    for name, anchors in COLORMAPS.items():
        np.testing.assert_allclose(apply_colormap(0.0, name), anchors[0])
        np.testing.assert_allclose(apply_colormap(1.0, name), anchors[-1])
        np.testing.assert_allclose(apply_colormap(-5.0, name), anchors[0])  # clipped
        np.testing.assert_allclose(apply_colormap(np.nan, name), anchors[0])  # no NaN leaks into the image
        mid = 0.5 / (len(anchors) - 1)  # halfway between the first two anchors
        np.testing.assert_allclose(apply_colormap(mid, name), (anchors[0] + anchors[1]) / 2)
    assert apply_colormap(np.zeros((4, 5)), "gray").shape == (4, 5, 3)
    with pytest.raises(ValueError, match="colormap"):
        RenderSettings(colormap="jet")


def test_depth_range_uses_covered_pixels():
    depth = np.concatenate([np.linspace(1, 10, 100), np.full(100, 99.0)])
    alpha = np.concatenate([np.ones(100), np.zeros(100)])
    near, far = depth_range(depth, alpha)
    assert near == pytest.approx(np.percentile(np.linspace(1, 10, 100), 2))
    assert far == pytest.approx(np.percentile(np.linspace(1, 10, 100), 98))
    assert depth_range(np.zeros(5), np.zeros(5)) == (0.0, 1.0)


def test_alpha_mode_shows_accumulated_opacity():
    g = ball_scene(200)
    V = look_at([4.0, 0.0, 0.5], [0, 0, 0])
    view = view_of(V, math.radians(45), 1.0)
    frame = render_view(g, view, RenderSettings(mode="Alpha", resolution=40))
    alpha = render(g, view_to_cameras(view, 40, 40)).alphas[0].numpy()
    np.testing.assert_array_equal(frame.image, to_uint8(np.repeat(alpha, 3, axis=-1)))


class Disc:
    """A made-up primitive kind (a flat screen-space disc) to show the viewer draws whatever render() draws."""

    def __init__(self, center, radius_px, color):
        self.center = torch.as_tensor(center, dtype=torch.float32)
        self.radius_px, self.color = radius_px, color


def render_disc(prims, cams, impl, sh_degree, rasterize_mode, **_):
    H, W = cams.height, cams.width
    p = cams.viewmats[0, :3, :3] @ prims.center + cams.viewmats[0, :3, 3]
    uv = (cams.Ks[0] @ p)[:2] / p[2]
    jj, ii = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    inside = (((jj - uv[0]) ** 2 + (ii - uv[1]) ** 2) < prims.radius_px ** 2).float()[None, ..., None]
    feats = torch.cat([inside * torch.tensor(prims.color), inside * p[2]], -1)
    z = torch.zeros(1, 1)
    return Rendered(feats, inside, z[..., None], z.int()[..., None], z, z)


def test_render_view_draws_any_registered_primitive():
    register(Kind("disc", (Disc,), render_disc))
    try:
        view = ViewCamera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), math.radians(60), 1.0)
        frame = render_view(Disc([0.0, 0.0, 2.0], 5, (1.0, 0.0, 0.0)), view, RenderSettings(resolution=32))
        assert tuple(frame.image[16, 16]) == (255, 0, 0) and tuple(frame.image[0, 0]) == (0, 0, 0)
        depth = render_view(Disc([0.0, 0.0, 2.0], 5, (1.0, 0.0, 0.0)), view,
                            RenderSettings(mode="Depth", resolution=32, near=1.0, far=3.0))
        np.testing.assert_allclose(depth.image[16, 16] / 255, apply_colormap(0.5), atol=1 / 255)
    finally:
        unregister("disc")


# ------------------------------------------------------------------------------------------- GUI state


def test_settings_versioning_and_validation():
    st = ViewerState()
    v0 = st.version
    st.update(mode="Depth")
    assert st.settings.mode == "Depth" and st.version == v0 + 1
    st.update(mode="Depth")  # no change, no new version (no needless re-render)
    assert st.version == v0 + 1
    copy = st.settings
    copy.resolution = 7  # callers get copies; the shared settings do not change under them
    assert st.settings.resolution == 512
    with pytest.raises(ValueError, match="render mode"):
        st.update(mode="Normals")
    assert st.settings.mode == "Depth"


def test_pause_blocks_the_training_loop_until_resumed():
    st = ViewerState(total_steps=1000)
    steps = []

    def train():
        for k in range(1, 1000):
            if st.stop_requested:
                return
            steps.append(k)
            st.record_step(k, 0.1, 20.0, 10)
            st.wait_while_paused()
            time.sleep(0.001)

    st.set_paused(True)
    t = threading.Thread(target=train)
    t.start()
    time.sleep(0.3)
    assert steps == [1]  # blocked after its first step
    assert st.stats.paused
    st.set_paused(False)
    deadline = time.time() + 5
    while len(steps) < 20 and time.time() < deadline:
        time.sleep(0.01)
    assert len(steps) >= 20
    st.set_paused(True)
    time.sleep(0.1)
    n = len(steps)
    time.sleep(0.2)
    assert len(steps) == n
    st.request_stop()  # stopping ends the pause too
    t.join(5)
    assert not t.is_alive()
    assert st.wait_while_paused(timeout=0.01) is True


def test_step_rate_and_stats():
    rate = StepRate(window_s=5.0)
    for k in range(11):
        r = rate.update(k, now=100.0 + 0.2 * k)
    assert r == pytest.approx(5.0)
    for k in range(11, 31):  # slower later: the window forgets the old samples
        r = rate.update(k, now=102.0 + 1.0 * (k - 10))
    assert r == pytest.approx(1.0)
    st = ViewerState(total_steps=50)
    st.record_step(3, 0.5, 18.0, 1234, now=0.0)
    s = st.record_step(4, float("nan"), float("nan"), 1240, now=1.0)  # a rolled-back step
    assert (s.step, s.loss, s.psnr, s.num_primitives, s.steps_per_s) == (4, 0.5, 18.0, 1240, pytest.approx(1.0))
    md = s.markdown()
    assert "4 / 50" in md and "1,240" in md and "18.00" in md


# ------------------------------------------------------------------------------------------ camera path


def key(yaw_deg: float, pos, fov_deg: float = 50.0) -> ViewCamera:
    x, y, z, w = Rotation.from_euler("y", yaw_deg, degrees=True).as_quat()
    return ViewCamera((w, x, y, z), tuple(float(p) for p in pos), math.radians(fov_deg), 1.5)


def test_path_passes_through_keyframes_and_slerps():
    keys = [key(0, (0, 0, 0), 40), key(90, (1, 0, 0), 60), key(180, (1, 1, 0), 60)]
    path = interpolate_path(keys, 9)  # frames at t = 0, 0.25, ..., 2
    for idx, k in ((0, keys[0]), (4, keys[1]), (8, keys[2])):
        np.testing.assert_allclose(path[idx].position, k.position, atol=1e-12)
        assert abs(np.dot(path[idx].wxyz, k.wxyz)) == pytest.approx(1.0)
    # halfway between 0 and 90 degrees about y: 45 degrees, as scipy's Slerp says
    x, y, z, w = Rotation.from_euler("y", 45, degrees=True).as_quat()
    assert abs(np.dot(path[2].wxyz, (w, x, y, z))) == pytest.approx(1.0)
    assert path[2].fov_y == pytest.approx(math.radians(50))
    assert all(abs(np.linalg.norm(p.wxyz) - 1) < 1e-12 for p in path)
    loop = interpolate_path(keys, 6, loop=True)  # t = 0, 0.5, ..., 2.5 over 3 segments
    np.testing.assert_allclose(loop[2].position, keys[1].position, atol=1e-12)
    np.testing.assert_allclose(loop[4].position, keys[2].position, atol=1e-12)
    np.testing.assert_allclose(slerp([1, 0, 0, 0], [-1, 0, 0, 0], 0.5), [1, 0, 0, 0])  # same rotation
    with pytest.raises(ValueError, match="2 keyframes"):
        interpolate_path(keys[:1], 10)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_video_reads_back(tmp_path, suffix):
    frames = [np.full((32, 48, 3), (10 * k, 100, 200 - 10 * k), np.uint8) for k in range(8)]
    path = write_video(tmp_path / f"path{suffix}", frames, fps=12)
    assert path.is_file() and not list(tmp_path.glob(".*tmp*"))
    if suffix == ".gif":
        import imageio.v2 as imageio

        back = imageio.mimread(path)
        assert len(back) == 8 and back[3].shape[:2] == (32, 48)
        np.testing.assert_allclose(back[3][16, 24, :3], frames[3][16, 24], atol=8)
    else:
        import cv2

        cap = cv2.VideoCapture(str(path))
        got = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            got.append(img[..., ::-1])
        assert len(got) == 8 and got[0].shape == (32, 48, 3)
        np.testing.assert_allclose(got[5].mean((0, 1)), frames[5][0, 0], atol=12)
    with pytest.raises(ValueError, match="must end in"):
        write_video(tmp_path / "x.avi", frames)


# ---------------------------------------------------------------------------------------------- splats


def test_client_side_splat_covariances():
    g = ball_scene(20)
    a = splat_arrays(g)
    q = g.quats.double().numpy()
    R = Rotation.from_quat(np.concatenate([q[:, 1:], q[:, :1]], 1)).as_matrix()
    S = g.scales.double().numpy()
    expected = R @ (S[:, :, None] ** 2 * np.transpose(R, (0, 2, 1)))
    np.testing.assert_allclose(a["covariances"], expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a["rgbs"], (0.5 + 0.28209479177387814 * g.sh[:, 0]).clamp(0, 1).numpy(), atol=1e-6)
    assert a["opacities"].shape == (20, 1)
    assert len(splat_arrays(g, max_count=5)["centers"]) == 5
    assert splat_arrays(Disc([0, 0, 1], 1, (1, 1, 1))) is None
