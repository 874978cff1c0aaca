"""Photo folders: EXIF orientation and focal length, JPEG and PNG."""

import numpy as np
import pytest
from PIL import Image

from sparsesplat.datasets import load
from sparsesplat.datasets.photos import EXIF_IFD, FOCAL_35MM, FOCAL_MM, FOCAL_PLANE_UNIT, FOCAL_PLANE_XRES


def _save(path, arr, orientation=None, ifd=None):
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    for tag, value in (ifd or {}).items():
        exif.get_ifd(EXIF_IFD)[tag] = value
    Image.fromarray(arr).save(path, exif=exif.tobytes(), **({"quality": 98} if path.suffix == ".jpg" else {}))


def _gradient(h=30, w=40):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w)[None]
    arr[..., 1] = np.linspace(0, 255, h)[:, None]
    return arr


def test_exif_orientation_is_applied(tmp_path):
    arr = _gradient()
    _save(tmp_path / "a.png", arr, orientation=6)  # stored landscape, displayed rotated 90 deg clockwise
    _save(tmp_path / "b.png", arr, orientation=6)
    data = load(tmp_path)
    assert data.images.shape == (2, 40, 30, 3) and (data.width, data.height) == (30, 40)
    expected = np.rot90(arr, k=-1).astype(np.float32) / 255
    np.testing.assert_allclose(data.images[0].numpy(), expected, atol=1e-6)
    assert data.cameras.Ks[0, 0, 2] == 15 and data.cameras.Ks[0, 1, 2] == 20


def test_focal_from_35mm_equivalent(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        _save(tmp_path / name, _gradient(), ifd={FOCAL_35MM: 28})
    data = load(tmp_path)
    assert not data.focal_is_guess and data.poses_known is False
    assert data.cameras.Ks[0, 0, 0] == pytest.approx(28 / 36 * 40)
    assert data.cameras.Ks[0, 1, 1] == pytest.approx(28 / 36 * 40)
    assert "guessed" not in data.summary() and "poses unknown" in data.summary()


def test_focal_from_focal_length_and_sensor_resolution(tmp_path):
    # 4.0 mm lens, 10 px per mm on the sensor (FocalPlaneResolutionUnit 4 = mm) -> 40 px at full size.
    ifd = {FOCAL_MM: 4.0, FOCAL_PLANE_XRES: 10.0, FOCAL_PLANE_UNIT: 4}
    for name in ("a.png", "b.png"):
        _save(tmp_path / name, _gradient(), ifd=ifd)
    data = load(tmp_path)
    assert not data.focal_is_guess
    assert data.cameras.Ks[0, 0, 0] == pytest.approx(40.0)


def test_default_focal_is_flagged(tmp_path):
    for name in ("a.png", "b.jpg"):
        Image.fromarray(_gradient()).save(tmp_path / name)
    data = load(tmp_path)
    assert data.focal_is_guess
    assert data.cameras.Ks[0, 0, 0] == pytest.approx(0.9 * 40)
    assert "guessed" in data.summary()


def test_rgba_photo_keeps_alpha_as_mask(tmp_path):
    rgba = np.dstack([_gradient(), np.full((30, 40), 128, np.uint8)])
    for name in ("a.png", "b.png"):
        Image.fromarray(rgba).save(tmp_path / name)
    data = load(tmp_path, background=(1.0, 1.0, 1.0))
    a = 128 / 255
    assert data.masks is not None and float(data.masks[0, 0, 0, 0]) == pytest.approx(a)
    expected = _gradient().astype(np.float32) / 255 * a + (1 - a)
    np.testing.assert_allclose(data.images[0].numpy(), expected, atol=1e-6)


def test_photos_in_images_subfolder_layout_is_explicit(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(_gradient()).save(tmp_path / name)
    assert load(tmp_path, format="photos").source_format == "photos"
