"""Run-folder writers, checked by reading the files back with independent readers (json, pycolmap, PIL,
sparsesplat.datasets) and by projecting points through the cameras they describe."""

from __future__ import annotations

import json

import numpy as np
import pycolmap
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from sparsesplat import datasets
from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.cameras import intrinsics, look_at
from sparsesplat.recon.export import (
    save_side_by_side,
    viewmats_to_user,
    write_cameras_json,
    write_colmap_text,
    write_transforms_json,
)

W, H = 24, 16


def make_cameras(centred: bool = False) -> Cameras:
    eyes = [(3.0, 0.5, 1.0), (-2.0, 2.5, 0.5), (0.5, -3.0, 2.0)]
    viewmats = torch.stack([look_at(e, (0.1, 0.2, 0.0)) for e in eyes])
    if centred:
        Ks = torch.stack([intrinsics(20.0, 20.0, W / 2, H / 2)] * 3)
    else:  # two cameras share intrinsics, the third differs
        Ks = torch.stack([intrinsics(20.0, 21.0, 11.5, 8.25), intrinsics(20.0, 21.0, 11.5, 8.25),
                          intrinsics(18.0, 18.5, 12.0, 7.75)])
    return Cameras(viewmats, Ks, W, H)


def make_transform(s: float = 2.5) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = s * Rotation.from_euler("xyz", [0.3, -0.7, 1.1]).as_matrix()
    T[:3, 3] = [0.4, -1.2, 2.0]
    return T


def project(viewmat: np.ndarray, K: np.ndarray, X: np.ndarray) -> np.ndarray:
    cam = X @ viewmat[:3, :3].T + viewmat[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:3]


def test_user_frame_projects_to_the_same_pixels():
    cams = make_cameras()
    T = make_transform()
    X_user = np.random.default_rng(0).normal(size=(20, 3))
    X_norm = X_user @ T[:3, :3].T + T[:3, 3]
    V_user = viewmats_to_user(cams.viewmats, T)
    for i in range(len(cams)):
        V_n, K = cams.viewmats[i].numpy(), cams.Ks[i].numpy()
        np.testing.assert_allclose(project(V_user[i], K, X_user), project(V_n, K, X_norm), atol=1e-9)
        R = V_user[i, :3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        # camera centre maps back through T^-1, and depths shrink by s
        c_norm = np.linalg.inv(V_n)[:3, 3]
        c_user = np.linalg.inv(V_user[i])[:3, 3]
        np.testing.assert_allclose(T[:3, :3] @ c_user + T[:3, 3], c_norm, atol=1e-12)
        z_user = (X_user @ R.T + V_user[i, :3, 3])[:, 2]
        z_norm = (X_norm @ V_n[:3, :3].T + V_n[:3, 3])[:, 2]
        np.testing.assert_allclose(z_user * 2.5, z_norm, atol=1e-12)
    np.testing.assert_allclose(viewmats_to_user(cams.viewmats, None), cams.viewmats.numpy())
    with pytest.raises(ValueError, match="similarity"):
        viewmats_to_user(cams.viewmats, np.diag([1.0, 2.0, 3.0, 1.0]))


def test_cameras_json(tmp_path):
    cams = make_cameras()
    refined = Cameras(cams.viewmats.clone(), cams.Ks * 1.01, W, H)
    refined.viewmats[:, :3, 3] += 0.05
    T = make_transform()
    path = tmp_path / "run" / "cameras.json"
    write_cameras_json(path, ["a.png", "b.png", "c.png"], cams, refined, T, focal_is_guess=True)
    doc = json.loads(path.read_text())
    assert doc["frame"] == "user" and doc["focal_is_guess"] is True
    np.testing.assert_allclose(doc["normalization"], T)
    X_user = np.random.default_rng(1).normal(size=(10, 3))
    X_norm = X_user @ T[:3, :3].T + T[:3, 3]
    for i, cam in enumerate(doc["cameras"]):
        assert cam["name"] == "abc"[i] + ".png" and (cam["width"], cam["height"]) == (W, H)
        for src, entry in ((cams, cam), (refined, cam["refined"])):
            K = src.Ks[i].double().numpy()
            assert [entry[k] for k in ("fx", "fy", "cx", "cy")] == pytest.approx([K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
            V = np.array(entry["viewmat"])
            np.testing.assert_allclose(np.array(entry["camtoworld"]) @ V, np.eye(4), atol=1e-12)
            np.testing.assert_allclose(project(V, K, X_user), project(src.viewmats[i].double().numpy(), K, X_norm),
                                       atol=1e-8)
    write_cameras_json(tmp_path / "plain.json", ["a", "b", "c"], cams)
    doc = json.loads((tmp_path / "plain.json").read_text())
    assert doc["normalization"] is None and "refined" not in doc["cameras"][0]
    np.testing.assert_allclose(doc["cameras"][2]["viewmat"], cams.viewmats[2].numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="2 names for 3 cameras"):
        write_cameras_json(tmp_path / "x.json", ["a", "b"], cams)


def test_colmap_text_reads_back_with_pycolmap_and_load(tmp_path):
    cams = make_cameras()
    names = ["img_a.png", "img_b.png", "img_c.png"]
    T = make_transform(0.5)
    rng = np.random.default_rng(2)
    pts_norm, cols = rng.normal(size=(5, 3)), rng.uniform(size=(5, 3))
    model = write_colmap_text(tmp_path, names, cams, pts_norm, cols, transform=T)
    assert model == tmp_path / "sparse" / "0"
    rec = pycolmap.Reconstruction(str(model))
    assert len(rec.cameras) == 2  # the first two cameras share intrinsics
    V_user = viewmats_to_user(cams.viewmats, T)
    by_name = {im.name: im for im in rec.images.values()}
    assert sorted(by_name) == names
    for i, name in enumerate(names):
        im = by_name[name]
        pose = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        np.testing.assert_allclose(np.asarray(pose.matrix()), V_user[i, :3], atol=1e-9)
        cam = rec.cameras[im.camera_id]
        assert cam.model.name == "PINHOLE" and (cam.width, cam.height) == (W, H)
        K = cams.Ks[i].double().numpy()
        np.testing.assert_allclose(cam.params, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
    assert by_name["img_a.png"].camera_id == by_name["img_b.png"].camera_id != by_name["img_c.png"].camera_id
    Tinv = np.linalg.inv(T)
    xyz = np.array([p.xyz for p in sorted(rec.points3D.values(), key=lambda p: p.xyz[0])])
    expected = pts_norm @ Tinv[:3, :3].T + Tinv[:3, 3]
    np.testing.assert_allclose(xyz, expected[np.argsort(expected[:, 0])], atol=1e-9)

    (tmp_path / "images").mkdir()
    for name in names:  # tiny images so the project's own loader reads the model too
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "images" / name)
    scene = datasets.load(tmp_path, format="colmap")
    assert scene.names == names
    np.testing.assert_allclose(scene.cameras.viewmats.double().numpy(), V_user, atol=1e-5)
    np.testing.assert_allclose(scene.cameras.Ks.double().numpy(), cams.Ks.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(np.sort(scene.point_colors[:, 0]), np.sort(np.round(cols[:, 0] * 255) / 255), atol=1e-6)


def test_transforms_json_loads_as_blender(tmp_path):
    cams = make_cameras(centred=True)
    names = ["train/r_0.png", "train/r_1.png", "train/r_2.png"]
    for name in names:
        (tmp_path / "train").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((H, W, 4), np.uint8)).save(tmp_path / name)
    T = make_transform(3.0)
    write_transforms_json(tmp_path / "transforms_train.json", names, cams, transform=T)
    scene = datasets.load(tmp_path, format="blender")
    V_user = viewmats_to_user(cams.viewmats, T)
    np.testing.assert_allclose(scene.cameras.viewmats.double().numpy(), V_user, atol=1e-5)
    np.testing.assert_allclose(scene.cameras.Ks.double().numpy(), cams.Ks.double().numpy(), atol=1e-4)


def test_transforms_json_per_frame_intrinsics(tmp_path):
    cams = make_cameras()
    write_transforms_json(tmp_path / "transforms.json", ["a", "b", "c"], cams)
    doc = json.loads((tmp_path / "transforms.json").read_text())
    for i, frame in enumerate(doc["frames"]):
        c2w_gl = np.array(frame["transform_matrix"])
        # re-derive the OpenCV viewmat independently: flip the camera's y and z axes, invert
        c2w_cv = c2w_gl.copy()
        c2w_cv[:3, 1:3] *= -1
        np.testing.assert_allclose(np.linalg.inv(c2w_cv), cams.viewmats[i].numpy(), atol=1e-9)
        # OpenGL: the camera looks down its -z axis, towards the look-at target
        forward = -c2w_gl[:3, 2]
        to_target = np.array([0.1, 0.2, 0.0]) - c2w_gl[:3, 3]
        np.testing.assert_allclose(forward, to_target / np.linalg.norm(to_target), atol=1e-9)
        K = cams.Ks[i].numpy()
        assert [frame[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")] == pytest.approx(
            [K[0, 0], K[1, 1], K[0, 2], K[1, 2], W, H])
    assert doc["camera_angle_x"] == pytest.approx(2 * np.arctan(W / 40.0))


def test_side_by_side(tmp_path):
    render = np.zeros((4, 5, 3))
    render[..., 0] = 1.0
    gt = torch.full((4, 5, 3), 0.5)
    save_side_by_side(tmp_path / "renders" / "view.png", render, gt)
    out = np.asarray(Image.open(tmp_path / "renders" / "view.png"))
    assert out.shape == (4, 10, 3) and out.dtype == np.uint8
    assert (out[:, :5] == [255, 0, 0]).all() and (out[:, 5:] == 128).all()
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["view.png"]
    with pytest.raises(ValueError, match="differ in size"):
        save_side_by_side(tmp_path / "bad.png", render, np.zeros((4, 6, 3)))
