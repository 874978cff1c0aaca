"""Real scenes (lego, fern in ../shared/data): protocols and camera correctness by epipolar geometry."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sparsesplat.datasets import load

pytestmark = pytest.mark.needs_data


def _data_dir() -> Path:
    return Path(os.environ.get("SPARSESPLAT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="module")
def lego():
    path = _data_dir() / "nerf_synthetic" / "lego"
    if not path.is_dir():
        pytest.skip(f"lego not found at {path} (set SPARSESPLAT_DATA to the folder holding nerf_synthetic/ and llff/)")
    return load(path, protocol="blender8", downscale=2)


@pytest.fixture(scope="module")
def fern():
    path = _data_dir() / "llff" / "fern"
    if not path.is_dir():
        pytest.skip(f"fern not found at {path} (set SPARSESPLAT_DATA to the folder holding nerf_synthetic/ and llff/)")
    return load(path, protocol="llff3", downscale=8)


def _matches(img1: torch.Tensor, img2: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """SIFT matches (ratio test 0.75) as (M, 2) pixel coordinates with centres at j + 0.5."""
    sift = cv2.SIFT_create()
    grey = [cv2.cvtColor((im.numpy() * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY) for im in (img1, img2)]
    (k1, d1), (k2, d2) = (sift.detectAndCompute(g, None) for g in grey)
    pairs = cv2.BFMatcher().knnMatch(d1, d2, k=2)
    good = [m for m, n in pairs if m.distance < 0.75 * n.distance]
    p1 = np.array([k1[m.queryIdx].pt for m in good]) + 0.5
    p2 = np.array([k2[m.trainIdx].pt for m in good]) + 0.5
    return p1, p2


def _fundamental(vm1, K1, vm2, K2) -> np.ndarray:
    R = vm2[:3, :3] @ vm1[:3, :3].T
    t = vm2[:3, 3] - R @ vm1[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(K2).T @ tx @ R @ np.linalg.inv(K1)


def _sampson(F, p1, p2) -> np.ndarray:
    x1 = np.c_[p1, np.ones(len(p1))]
    x2 = np.c_[p2, np.ones(len(p2))]
    Fx1, Ftx2 = x1 @ F.T, x2 @ F
    num = np.einsum("ij,ij->i", x2, Fx1) ** 2
    return np.sqrt(num / (Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2))


def _median_sampson(data, a, b, flip=None) -> tuple[float, int]:
    vm = data.cameras.viewmats.double().numpy().copy()
    if flip is not None:
        vm = flip @ vm
    K = data.cameras.Ks.double().numpy()
    p1, p2 = _matches(data.images[a], data.images[b])
    return float(np.median(_sampson(_fundamental(vm[a], K[a], vm[b], K[b]), p1, p2))), len(p1)


def _closest_pair_with_a_training_view(data) -> tuple[int, int]:
    """Blender-8 training views are too far apart for SIFT on lego; pair one with its nearest loaded view."""
    c = data.cameras.centers.double().numpy()
    pairs = [(np.linalg.norm(c[i] - c[j]), i, j) for i in data.train_ids for j in range(len(data)) if j != i]
    _, i, j = min(pairs)
    return i, j


def test_lego_blender8(lego):
    assert len(lego) == 33 and (lego.width, lego.height) == (400, 400)
    assert [lego.names[i] for i in lego.train_ids] == [f"train/r_{i}" for i in (26, 86, 2, 55, 75, 93, 16, 73)]
    assert [lego.names[i] for i in lego.test_ids] == [f"test/r_{i}" for i in range(0, 200, 8)]
    assert lego.white_background and lego.masks.shape == (33, 400, 400, 1)
    assert lego.cameras.Ks[0, 0, 0] == pytest.approx(0.5 * 400 / np.tan(0.5 * 0.6911112070083618), rel=1e-6)
    corner = lego.images[:, 0, 0]  # background pixels are white after compositing
    assert torch.allclose(corner, torch.ones_like(corner))


def test_lego_cameras_agree_with_sift_matches(lego):
    a, b = _closest_pair_with_a_training_view(lego)
    err, n = _median_sampson(lego, a, b)
    assert n >= 50 and err < 2.0, (err, n)
    # Without the OpenGL -> OpenCV axis flip the same matches are far off the epipolar lines.
    wrong, _ = _median_sampson(lego, a, b, flip=np.diag([1.0, -1.0, -1.0, 1.0]))
    assert wrong > 2.0 and wrong > 10 * err, (wrong, err)


def test_fern_llff3(fern):
    assert [fern.source_ids[i] for i in fern.train_ids] == [1, 10, 19]
    assert [fern.source_ids[i] for i in fern.test_ids] == [0, 8, 16]
    assert (fern.width, fern.height) == (504, 378)
    bounds = np.load(_data_dir() / "llff" / "fern" / "poses_bounds.npy")[:, 15:]
    assert fern.near == pytest.approx(bounds[:, 0].min()) and fern.far == pytest.approx(bounds[:, 1].max())
    fx = np.load(_data_dir() / "llff" / "fern" / "poses_bounds.npy")[0, 14] / 8
    assert fern.cameras.Ks[0, 0, 0] == pytest.approx(fx, rel=1e-6) and fern.cameras.Ks[0, 0, 2] == 252


def test_fern_cameras_agree_with_sift_matches(fern):
    a, b = fern.train_ids[0], fern.train_ids[1]
    err, n = _median_sampson(fern, a, b)
    assert n >= 50 and err < 2.0, (err, n)
