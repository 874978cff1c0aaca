"""Bad input: each case fails (or warns) with a message naming the file and what to do."""

import json

import numpy as np
import pytest
from PIL import Image

from sparsesplat.datasets import DatasetError, load, writers
from sparsesplat.datasets.synthetic import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(3, 24, 18, kind="forward", n_points=20)


def _photo(path, size=(24, 18), colour=(200, 100, 50)):
    Image.new("RGB", size, colour).save(path)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'} does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(DatasetError, match="does not exist"):
        load(tmp_path / "nope", format="photos")


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="is empty; put photos"):
        load(tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="cannot tell the format"):
        load(tmp_path)
    with pytest.warns(UserWarning, match="notes.txt"), pytest.raises(DatasetError, match="holds no JPEG/PNG"):
        load(tmp_path, format="photos")


def test_non_image_files_are_skipped_with_a_warning(tmp_path):
    for i in range(3):
        _photo(tmp_path / f"{i}.jpg")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "clip.mov").write_bytes(b"\0" * 10)
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\).*clip.mov, readme.txt"):
        data = load(tmp_path)
    assert data.names == ["0.jpg", "1.jpg", "2.jpg"] and data.focal_is_guess


def test_corrupt_image_is_named(tmp_path):
    _photo(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.png.*re-export it or remove it"):
        load(tmp_path)


def test_truncated_image_is_named(tmp_path):
    _photo(tmp_path / "a.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"b\.png"):
        load(tmp_path, resize_mixed=True)


def test_mixed_sizes_error_or_resize(tmp_path):
    _photo(tmp_path / "a.jpg", (40, 30))
    _photo(tmp_path / "b.jpg", (40, 30))
    _photo(tmp_path / "c.jpg", (20, 20))
    with pytest.raises(DatasetError, match=r"2 different sizes \(40x30: a.jpg, b.jpg; 20x20: c.jpg\).*resize_mixed=True"):
        load(tmp_path)
    data = load(tmp_path, resize_mixed=True)
    assert data.images.shape == (3, 30, 40, 3)
    K = data.cameras.Ks
    assert K[0, 0, 0] == pytest.approx(0.9 * 40) and K[2, 0, 0] == pytest.approx(0.9 * 20 * 2)
    assert K[2, 1, 1] == pytest.approx(0.9 * 20 * 1.5) and K[2, 1, 2] == pytest.approx(15)


def test_fewer_than_two_images(tmp_path):
    _photo(tmp_path / "only.jpg")
    with pytest.raises(DatasetError, match="has 1 image; a scene needs at least 2 views"):
        load(tmp_path)


def test_colmap_bad_line_names_file_and_line(tmp_path, scene):
    writers.write_colmap_text(tmp_path / "c", scene)
    images_txt = tmp_path / "c/sparse/0/images.txt"
    lines = images_txt.read_text().splitlines()
    lines[5] = lines[5].replace(" ", " oops ", 1)  # second image line (after 3 comments, image 1 and its points)
    images_txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"images.txt, line 6: expected IMAGE_ID QW"):
        load(tmp_path / "c")


def test_colmap_wrong_parameter_count(tmp_path, scene):
    writers.write_colmap_text(tmp_path / "c", scene)
    cams = tmp_path / "c/sparse/0/cameras.txt"
    cams.write_text(cams.read_text().replace("PINHOLE", "SIMPLE_PINHOLE", 1))
    with pytest.raises(DatasetError, match=r"cameras.txt, line 3: SIMPLE_PINHOLE takes 3 parameters, got 4"):
        load(tmp_path / "c")


def test_colmap_unsupported_model(tmp_path, scene):
    writers.write_colmap_text(tmp_path / "c", scene)
    cams = tmp_path / "c/sparse/0/cameras.txt"
    lines = cams.read_text().splitlines()
    lines[2] = lines[2].split()[0] + " OPENCV_FISHEYE 24 18 20 20 12 9 0.1 0 0 0"  # after 2 comment lines
    cams.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="OPENCV_FISHEYE camera.*colmap image_undistorter"):
        load(tmp_path / "c")


def test_colmap_missing_image_file(tmp_path, scene):
    writers.write_colmap_text(tmp_path / "c", scene)
    (tmp_path / "c/images/view_001.png").unlink()
    with pytest.raises(DatasetError, match=r"view_001.png does not exist"):
        load(tmp_path / "c")


def test_malformed_transforms_json_reports_line(tmp_path, scene):
    writers.write_blender(tmp_path / "b", scene)
    f = tmp_path / "b/transforms_train.json"
    text = f.read_text().splitlines()
    text[3] = text[3] + ","  # trailing comma inside the first frame
    f.write_text("\n".join(text))
    with pytest.raises(DatasetError, match=r"transforms_train.json is not valid JSON: .* at line \d+"):
        load(tmp_path / "b")


def test_transforms_json_missing_keys(tmp_path):
    (tmp_path / "transforms_train.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(DatasetError, match="lacks 'camera_angle_x'"):
        load(tmp_path)


def test_poses_bounds_wrong_shape(tmp_path, scene):
    writers.write_llff(tmp_path / "l", scene)
    np.save(tmp_path / "l/poses_bounds.npy", np.zeros((3, 15)))
    with pytest.raises(DatasetError, match=r"poses_bounds.npy has shape \(3, 15\); LLFF poses_bounds.npy must be \(N, 17\)"):
        load(tmp_path / "l")


def test_poses_bounds_count_mismatch(tmp_path, scene):
    writers.write_llff(tmp_path / "l", scene)
    (tmp_path / "l/images/image002.png").unlink()
    with pytest.raises(DatasetError, match="has 3 poses but .*images holds 2 images"):
        load(tmp_path / "l")


def test_protocol_the_scene_cannot_serve(tmp_path, scene):
    writers.write_llff(tmp_path / "l", scene)
    with pytest.raises(ValueError, match=r"protocol dtu3: the llff scene .* has 3 images, missing ids"):
        load(tmp_path / "l", protocol="dtu3")
    with pytest.raises(ValueError, match="unknown protocol"):
        load(tmp_path / "l", protocol="llff5")
