"""``sparsesplat poses`` and ``sparsesplat reconstruct`` on a folder of photos without camera files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.recon.cli import main
from sparsesplat.recon.poses.align import pose_errors


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five PNG photos of a procedural scene (no EXIF) and the scene's exact cameras."""
    s = make_scene(5, 256, 192, "forward", n_points=10)
    folder = tmp_path_factory.mktemp("photos")
    for i, im in enumerate(s.images):
        Image.fromarray(np.round(im * 255).astype(np.uint8)).save(folder / f"img_{i}.png")
    return folder, s


def _viewmats(doc):
    return np.array([c["viewmat"] for c in doc["cameras"]])


def test_poses_command_writes_cameras_models_and_points(photos, tmp_path):
    folder, s = photos
    out = tmp_path / "poses"
    assert main(["poses", str(folder), "-o", str(out), "--points", "sparse"]) == 0
    doc = json.loads((out / "cameras.json").read_text())
    assert [c["name"] for c in doc["cameras"]] == [f"img_{i}.png" for i in range(5)]
    assert doc["focal_is_guess"] is True
    # no EXIF: the focal was estimated from a guess; the poses still match the truth up to a similarity
    e = pose_errors(_viewmats(doc), s.cameras.viewmats.numpy())
    assert e["median_rotation_deg"] < 1.0 and e["median_centre_pct"] < 3.0
    fx = doc["cameras"][0]["fx"]
    assert abs(fx / s.cameras.Ks[0, 0, 0].item() - 1) < 0.05
    tj = json.loads((out / "transforms.json").read_text())
    c2w_gl = np.array(tj["frames"][0]["transform_matrix"])
    np.testing.assert_allclose(c2w_gl[:3, 3], np.linalg.inv(_viewmats(doc)[0])[:3, 3], atol=1e-9)
    images_txt = (out / "sparse/0/images.txt").read_text()
    assert "img_4.png" in images_txt
    n_pts = sum(1 for ln in (out / "sparse/0/points3D.txt").read_text().splitlines() if ln and ln[0] != "#")
    report = json.loads((out / "poses.json").read_text())
    assert report["registered"] == 5 and report["sparse_points"] == n_pts > 100
    assert (out / "points.ply").stat().st_size > 15 * n_pts


def test_poses_command_error_for_identical_photos(tmp_path, capsys):
    folder = tmp_path / "same"
    folder.mkdir()
    im = Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8))
    for i in range(3):
        im.save(folder / f"p{i}.png")
    assert main(["poses", str(folder), "-o", str(tmp_path / "out")]) == 1
    assert "same image" in capsys.readouterr().err


@pytest.mark.slow
def test_reconstruct_photos_without_cameras_estimates_and_refines_poses(photos, tmp_path):
    folder, s = photos
    out = tmp_path / "run"
    code = main(["reconstruct", str(folder), "-o", str(out), "--init", "sfm", "--iters", "40",
                 "--pose-refine-start", "10", "--checkpoint-every", "0", "--sh-degree", "0"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["poses"]["registered"] == 5 and metrics["init_method"] == "sfm"
    doc = json.loads((out / "cameras.json").read_text())
    refined = np.array([c["refined"]["viewmat"] for c in doc["cameras"]])
    given = _viewmats(doc)
    # refinement moved the cameras only a little (the estimate was already good) and they stay accurate
    assert pose_errors(refined, s.cameras.viewmats.numpy())["median_rotation_deg"] < 1.0
    assert not np.allclose(refined, given)
    assert (out / "scene.ply").exists() and (out / "sparse/0/points3D.txt").exists()


@pytest.mark.slow
def test_resume_reuses_the_pose_estimate_and_the_refined_poses(photos, tmp_path, capsys):
    import torch

    folder, _ = photos
    out = tmp_path / "run"
    args = ["reconstruct", str(folder), "-o", str(out), "--init", "sfm", "--pose-refine-start", "5",
            "--checkpoint-every", "0", "--sh-degree", "0"]
    assert main([*args, "--iters", "20"]) == 0
    ckpt = torch.load(out / "checkpoints" / "step_000020.pt", weights_only=False)
    assert ckpt["camera_hook"]["steps"] == 20 and ckpt["camera_hook"]["rot"].abs().sum() > 0
    capsys.readouterr()
    assert main([*args, "--iters", "30", "--resume"]) == 0
    said = "".join(capsys.readouterr())
    assert "reusing the estimate" in said and "resumed from" in said
    ckpt2 = torch.load(out / "checkpoints" / "step_000030.pt", weights_only=False)
    assert ckpt2["camera_hook"]["steps"] == 30


@pytest.mark.filterwarnings("ignore")
def test_poses_command_with_a_depth_model_adds_aligned_points(photos, tmp_path):
    pytest.importorskip("transformers")
    from plyfile import PlyData

    from sparsesplat.priors.testing import make_tiny_dpt

    folder, _ = photos
    model = make_tiny_dpt(tmp_path / "dpt")
    out = tmp_path / "poses"
    assert main(["poses", str(folder), "-o", str(out), "--points", "mono-depth", "--depth-model", str(model)]) == 0
    report = json.loads((out / "poses.json").read_text())
    n_ply = len(PlyData.read(str(out / "points.ply"))["vertex"])
    assert n_ply == report["points"] > 2 * report["sparse_points"]
    assert len(list((out / "depth").glob("*.npy"))) == 5
