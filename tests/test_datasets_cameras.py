"""Camera conventions: hand-made projections, synthetic depth, decomposition, undistortion."""

import cv2
import numpy as np
import pytest
import torch

from sparsesplat.datasets import load, writers
from sparsesplat.datasets.blender import GL_TO_CV
from sparsesplat.datasets.dtu import decompose
from sparsesplat.datasets.images import undistort
from sparsesplat.datasets.llff import read_poses_bounds
from sparsesplat.datasets.synthetic import cast, make_scene
from sparsesplat.rasterizer.cameras import look_at


def _project(viewmat, K, X):
    x = K @ (viewmat[:3, :3] @ X + viewmat[:3, 3])
    return x[:2] / x[2]


def test_hand_made_camera_projection():
    """Camera at (0, -5, 0) looking along +y, z up: a point 1 right and 1 up lands right of and above centre."""
    vm = look_at((0.0, -5.0, 0.0), (0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)).numpy()
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    u, v = _project(vm, K, np.array([1.0, 0.0, 1.0]))
    assert (u, v) == pytest.approx((50 + 100 * 1 / 5, 40 - 100 * 1 / 5))


def test_blender_axes_convert_to_opencv(tmp_path):
    """A Blender camera at (0, -4, 0) with identity-like rotation looking along +y (OpenGL: -z forward)."""
    # OpenGL camera axes in world: x right = +x, y up = +z, z back = -y.
    c2w_gl = np.eye(4)
    c2w_gl[:3, 0], c2w_gl[:3, 1], c2w_gl[:3, 2] = (1, 0, 0), (0, 0, 1), (0, -1, 0)
    c2w_gl[:3, 3] = (0, -4, 0)
    vm = np.linalg.inv(c2w_gl @ GL_TO_CV)
    K = np.array([[50.0, 0, 32], [0, 50, 32], [0, 0, 1]])
    assert _project(vm, K, np.array([0.0, 0.0, 0.0])) == pytest.approx((32, 32))
    assert _project(vm, K, np.array([0.0, 0.0, 1.0])) == pytest.approx((32, 32 - 50 / 4))  # up is up
    assert _project(vm, K, np.array([1.0, 0.0, 0.0])) == pytest.approx((32 + 50 / 4, 32))  # right is right


def test_llff_axes_convert_to_opencv(tmp_path):
    """LLFF columns [down, right, back]: a camera whose 'right' is world +x and 'down' world -z."""
    pose = np.zeros((3, 5))
    pose[:, 0] = (0, 0, -1)  # down
    pose[:, 1] = (1, 0, 0)  # right
    pose[:, 2] = (0, -1, 0)  # back (camera looks along +y)
    pose[:, 3] = (0, -4, 0)
    pose[:, 4] = (64, 64, 50)
    np.save(tmp_path / "poses_bounds.npy", np.concatenate([pose.ravel(), [1, 10]])[None])
    c2w, hwf, bounds = read_poses_bounds(tmp_path / "poses_bounds.npy")
    vm = np.linalg.inv(c2w[0])
    K = np.array([[50.0, 0, 32], [0, 50, 32], [0, 0, 1]])
    assert _project(vm, K, np.array([0.0, 0.0, 1.0])) == pytest.approx((32, 32 - 50 / 4))
    assert _project(vm, K, np.array([1.0, 0.0, 0.0])) == pytest.approx((32 + 50 / 4, 32))
    assert np.linalg.det(c2w[0, :3, :3]) == pytest.approx(1.0)
    assert bounds.tolist() == [[1, 10]]


def test_synthetic_depth_matches_cast_points():
    """The depth map at a pixel centre and the ray hit agree with projecting the hit through the camera."""
    scene = make_scene(2, 32, 24, kind="forward", n_points=200)
    cams = scene.cameras
    vm, K = cams.viewmats[0].numpy(), cams.Ks[0].numpy()
    X = scene.points
    z = X @ vm[2, :3] + vm[2, 3]
    uv = (X @ vm[:3, :3].T + vm[:3, 3]) @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 32) & (uv[:, 1] >= 0) & (uv[:, 1] < 24) & (z > 0)
    # Points seen by camera 0 (the first half of the samples) lie on its depth map at their pixel.
    first = np.arange(len(X)) < 100
    sel = inside & first
    j, i = np.floor(uv[sel]).astype(int).T
    d = scene.depths[0, i, j, 0]
    assert np.median(np.abs(d - z[sel]) / z[sel]) < 0.02
    # A ray through a pixel centre hits at exactly the stored depth.
    c2w = np.linalg.inv(vm)
    dcam = np.array([(10.5 - K[0, 2]) / K[0, 0], (7.5 - K[1, 2]) / K[1, 1], 1.0])
    dw = c2w[:3, :3] @ dcam
    t, p, _ = cast(c2w[:3, 3][None], (dw / np.linalg.norm(dw))[None], "forward")
    assert (p[0] @ vm[2, :3] + vm[2, 3]) == pytest.approx(scene.depths[0, 7, 10, 0], rel=1e-5)


def test_dtu_decompose_recovers_camera():
    vm = look_at((1.0, -3.0, 2.0), (0.0, 0.0, 0.0)).numpy()
    K = np.array([[300.0, 0.5, 200], [0, 310, 150], [0, 0, 1]])
    P = 7.0 * K @ vm[:3]
    K2, vm2 = decompose(P)
    np.testing.assert_allclose(K2, K, atol=1e-8)
    np.testing.assert_allclose(vm2, vm, atol=1e-8)


def _distort(img, K, dist):
    """The image a lens with ``dist`` would take of the pinhole image ``img`` (pixel centres at j + 0.5)."""
    h, w = img.shape[:2]
    K_cv = K.copy()
    K_cv[:2, 2] -= 0.5
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([jj.ravel(), ii.ravel()], 1)[:, None]
    und = cv2.undistortPoints(pts, K_cv, dist, P=K_cv).reshape(h, w, 2).astype(np.float32)
    return cv2.remap(img, und[..., 0], und[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _smooth(h=72, w=96):
    """Low-frequency colours, so resampling blur does not hide geometric errors."""
    ii, jj = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([0.5 + 0.4 * np.sin(jj / 6), 0.5 + 0.4 * np.cos(ii / 5), (jj + ii) / (h + w)], -1)


def test_undistort_inverts_lens_distortion():
    img = _smooth()
    K = np.array([[80.0, 0, 48], [0, 80, 36], [0, 0, 1]])
    dist = np.array([-0.3, 0.05, 0.001, -0.002])
    distorted = _distort(img, K, dist)
    before = np.abs(distorted - img)[10:-10, 10:-10].mean()
    after = np.abs(undistort(distorted, K, dist) - img)[10:-10, 10:-10].mean()
    assert before > 0.01 and after < 0.1 * before, (before, after)


def test_colmap_radial_camera_is_undistorted_to_pinhole(tmp_path):
    scene = make_scene(2, 96, 72, kind="forward", n_points=10)
    writers.write_colmap_text(tmp_path / "c", scene)
    K = scene.cameras.Ks[0].numpy()
    k1 = -0.25
    cams = tmp_path / "c/sparse/0/cameras.txt"
    lines = cams.read_text().splitlines()
    for n, line in enumerate(lines[1:], 1):
        cid = line.split()[0]
        lines[n] = f"{cid} SIMPLE_RADIAL 96 72 {K[0, 0]} {K[0, 2]} {K[1, 2]} {k1}"
        img_path = tmp_path / f"c/images/view_{n - 1:03d}.png"
        writers.write_png(img_path, _distort(_smooth(), K, np.array([k1, 0, 0, 0])))
    cams.write_text("\n".join(lines) + "\n")
    data = load(tmp_path / "c")
    assert torch.allclose(data.cameras.Ks.double(), scene.cameras.Ks, atol=1e-4)
    before = np.abs(_distort(_smooth(), K, np.array([k1, 0, 0, 0])) - _smooth())[10:-10, 10:-10].mean()
    err = (data.images - torch.from_numpy(_smooth())).abs()[:, 10:-10, 10:-10].mean()
    assert before > 0.01 and err < 0.15 * before, (err, before)
