"""Every format: a synthetic scene with known cameras written to disk and loaded back is unchanged."""

import numpy as np
import pytest
import torch
from PIL import Image

from sparsesplat.datasets import detect_format, load, writers
from sparsesplat.datasets.synthetic import make_scene

Q = 1.0 / 255  # 8-bit files


@pytest.fixture(scope="module")
def orbit():
    return make_scene(6, 40, 30, kind="orbit", n_points=300)


def _close_cameras(loaded, cams, tol=1e-5):
    assert loaded.width == cams.width and loaded.height == cams.height
    vm = loaded.viewmats.double()
    assert torch.allclose(vm, cams.viewmats, atol=tol), (vm - cams.viewmats).abs().max()
    assert torch.allclose(loaded.Ks.double(), cams.Ks, rtol=tol, atol=tol * 100)


@pytest.mark.parametrize("fmt,writer", [
    ("llff", writers.write_llff),
    ("colmap", writers.write_colmap_text),
    ("colmap", writers.write_colmap_binary),
    ("dtu", writers.write_dtu),
])
def test_roundtrip_cameras_and_images(tmp_path, orbit, fmt, writer):
    writer(tmp_path / "scene", orbit)
    assert detect_format(tmp_path / "scene") == fmt
    data = load(tmp_path / "scene")
    assert data.source_format == fmt and len(data) == 6
    assert data.images.dtype == torch.float32 and data.images.shape == (6, 30, 40, 3)
    _close_cameras(data.cameras, orbit.cameras)
    assert (data.images - torch.from_numpy(orbit.images)).abs().max() <= Q / 2 + 1e-6
    assert data.train_ids == list(range(6)) and data.test_ids == []


def test_dtu_folder_with_llff_poses_is_dtu_under_a_dtu_protocol(tmp_path, orbit):
    """Some DTU releases ship poses_bounds.npy beside cameras_sphere.npz: a dtu protocol reads it as DTU (with
    its masks), another protocol or none as LLFF."""
    writers.write_dtu(tmp_path / "scene", orbit)
    writers.write_llff(tmp_path / "llff", orbit)
    (tmp_path / "scene" / "poses_bounds.npy").write_bytes((tmp_path / "llff" / "poses_bounds.npy").read_bytes())
    assert detect_format(tmp_path / "scene") == "llff"
    assert detect_format(tmp_path / "scene", "dtu3") == "dtu"
    assert detect_format(tmp_path / "scene", "llff3") == "llff"


def test_blender_roundtrip_composites_on_white(tmp_path, orbit):
    writers.write_blender(tmp_path / "b", orbit, splits={"train": [0, 2, 4], "test": [1, 3, 5]})
    data = load(tmp_path / "b")
    assert data.names == ["train/r_0", "train/r_1", "train/r_2", "test/r_0", "test/r_1", "test/r_2"]
    order = [0, 2, 4, 1, 3, 5]
    _close_cameras(data.cameras, orbit.cameras[order])
    a = torch.from_numpy(orbit.alphas[order])
    assert data.white_background and data.masks is not None
    assert torch.allclose(data.masks, a)
    expected = torch.from_numpy(orbit.images[order]) * a + (1 - a)  # black-rendered scene on white
    assert (data.images - expected).abs().max() <= Q / 2 + 1e-6
    assert a.min() == 0 and data.images[a[..., 0] == 0].min() == 1.0  # the sky became white
    black = load(tmp_path / "b", background=(0, 0, 0))
    assert not black.white_background
    assert (black.images - torch.from_numpy(orbit.images[order])).abs().max() <= Q / 2 + 1e-6


def test_photos_roundtrip_focal_from_exif(tmp_path, orbit):
    writers.write_photos(tmp_path / "p", orbit)
    data = load(tmp_path / "p")
    assert data.source_format == "photos" and not data.poses_known and not data.focal_is_guess
    f = writers.focal35(orbit) / 36.0 * 40
    assert torch.allclose(data.cameras.Ks[0].double(), torch.tensor([[f, 0, 20], [0, f, 15], [0, 0, 1.0]], dtype=torch.float64))
    assert torch.equal(data.cameras.viewmats, torch.eye(4).expand(6, 4, 4))
    assert (data.images - torch.from_numpy(orbit.images)).abs().max() <= Q / 2 + 1e-6


def test_colmap_points(tmp_path, orbit):
    writers.write_colmap_text(tmp_path / "c", orbit)
    data = load(tmp_path / "c")
    assert data.points.shape == orbit.points.shape
    order = np.argsort(np.linalg.norm(data.points, axis=1))
    ref = np.argsort(np.linalg.norm(orbit.points, axis=1))
    np.testing.assert_allclose(data.points[order], orbit.points[ref], atol=1e-6)
    np.testing.assert_allclose(data.point_colors[order], orbit.point_colors[ref], atol=Q / 2 + 1e-6)


def test_dtu_scale_mat_gives_normalized_frame(tmp_path, orbit):
    s, c = 2.5, np.array([0.3, -0.2, 0.1])
    writers.write_dtu(tmp_path / "d", orbit, scale=s, center=c)
    data = load(tmp_path / "d")
    vm = orbit.cameras.viewmats.numpy()
    R, t = vm[:, :3, :3], vm[:, :3, 3]
    expected_t = ((R @ c) + t) / s  # x_world = s x_norm + c
    np.testing.assert_allclose(data.cameras.viewmats[:, :3, :3].numpy(), R, atol=1e-5)
    np.testing.assert_allclose(data.cameras.viewmats[:, :3, 3].numpy(), expected_t, atol=1e-5)
    assert torch.allclose(data.masks, torch.from_numpy(orbit.alphas))


@pytest.mark.parametrize("downscale,size", [(2, (20, 15)), ((16, 12), (16, 12)), (1.25, (32, 24))])
def test_downscale_scales_K_exactly(tmp_path, orbit, downscale, size):
    writers.write_colmap_text(tmp_path / "c", orbit)
    data = load(tmp_path / "c", downscale=downscale)
    assert (data.width, data.height) == size and data.images.shape[1:3] == (size[1], size[0])
    K = orbit.cameras.Ks.clone()
    K[:, 0] *= size[0] / 40
    K[:, 1] *= size[1] / 30
    assert torch.allclose(data.cameras.Ks.double(), K, atol=1e-4)
    # Area resampling: a 2x downscale is the mean of 2x2 blocks.
    if downscale == 2:
        full = load(tmp_path / "c").images
        blocks = full.reshape(6, 15, 2, 20, 2, 3).mean(dim=(2, 4))
        assert (data.images - blocks).abs().max() < 1e-5


def test_downscale_projects_points_to_the_same_place(tmp_path):
    """A surface point projects to pixel p at full size and to p * W'/W after a resize (no half-pixel shift)."""
    scene = make_scene(2, 64, 48, kind="forward", n_points=50)
    writers.write_colmap_text(tmp_path / "c", scene)
    full, half = load(tmp_path / "c"), load(tmp_path / "c", downscale=2)
    X = torch.from_numpy(scene.points).double()
    for d in (full, half):
        vm, K = d.cameras.viewmats[0].double(), d.cameras.Ks[0].double()
        p = (K @ (vm[:3, :3] @ X.T + vm[:3, 3:]))
        d.uv = (p[:2] / p[2]).T
    assert torch.allclose(half.uv, full.uv / 2, atol=1e-4)


def test_llff_picks_images_folder_by_downscale(tmp_path, orbit):
    writers.write_llff(tmp_path / "l", orbit, factors=(1, 2))
    K = orbit.cameras.Ks
    half = load(tmp_path / "l", downscale=2)
    assert (half.width, half.height) == (20, 15)
    assert torch.allclose(half.cameras.Ks[0, 0, 0].double(), K[0, 0, 0] / 2, rtol=1e-6)
    assert half.near is not None and half.far > half.near
    on_disk = np.asarray(Image.open(tmp_path / "l/images_2/image000.png"), np.float32) / 255
    assert np.abs(half.images[0].numpy() - on_disk).max() < 1e-6


def test_llff_falls_back_to_largest_folder_with_warning(tmp_path, orbit):
    writers.write_llff(tmp_path / "l", orbit, factors=(2,))
    with pytest.warns(UserWarning, match="no images at 40x30"):
        data = load(tmp_path / "l", downscale=1)
    assert (data.width, data.height) == (20, 15)
    assert torch.allclose(data.cameras.Ks[0, 0, 2], torch.tensor(10.0))


def test_protocol_loads_only_its_views(tmp_path):
    scene = make_scene(24, 16, 12, kind="forward", n_points=10)
    writers.write_llff(tmp_path / "l", scene)
    data = load(tmp_path / "l", protocol="llff3")
    assert data.source_ids == [0, 1, 8, 12, 16, 23]
    assert [data.source_ids[i] for i in data.train_ids] == [1, 12, 23]
    assert [data.source_ids[i] for i in data.test_ids] == [0, 8, 16]
    _close_cameras(data.cameras, scene.cameras[[0, 1, 8, 12, 16, 23]])
    train, test = data.train(), data.test()
    assert len(train) == 3 and train.train_ids == [0, 1, 2] and train.test_ids == []
    assert torch.equal(test.images, data.images[data.test_ids]) and test.names == ["image000.png", "image008.png", "image016.png"]
    text = data.summary()
    assert "llff" in text and "6 of 24 images (protocol llff3's views), 16x12" in text and "train [1, 12, 23]" in text and "test [0, 8, 16]" in text


def test_load_rejects_unknown_format(tmp_path, orbit):
    writers.write_llff(tmp_path / "l", orbit)
    with pytest.raises(ValueError, match="unknown format 'nerf'"):
        load(tmp_path / "l", format="nerf")
