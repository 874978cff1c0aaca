"""The optional learned matcher of pose estimation (recon.poses.learned_matching): keypoint conventions, the
COLMAP database it writes, loading errors, the CLI flag, and exact matches flowing through verification and
mapping to exact poses. Models are tiny random LightGlues saved to a temporary folder (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pycolmap
import pytest

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.recon.poses import learned_matching as lm
from sparsesplat.recon.poses.align import pose_errors
from sparsesplat.recon.poses.colmap_sfm import FeatureConfig, build_database
from sparsesplat.recon.poses.estimate import PoseConfig, estimate_poses

transformers = pytest.importorskip("transformers")


def _tiny_lightglue(folder, size=None, kind="lightglue"):
    """A random SuperPoint+LightGlue (or SuperGlue) small enough to run in milliseconds, saved with its image
    processor. No early stopping or pruning (random confidences would stop it at once) and no score filter."""
    import torch
    from transformers import (LightGlueConfig, LightGlueForKeypointMatching, SuperGlueConfig,
                              SuperGlueForKeypointMatching, SuperPointConfig)
    from transformers.models.lightglue.image_processing_pil_lightglue import LightGlueImageProcessorPil
    from transformers.models.superglue.image_processing_pil_superglue import SuperGlueImageProcessorPil

    torch.manual_seed(0)
    sp = SuperPointConfig(encoder_hidden_sizes=(8, 8, 16, 16), decoder_hidden_size=32, descriptor_decoder_dim=32,
                          max_keypoints=256, keypoint_threshold=0.0, initializer_range=0.1)
    if kind == "lightglue":
        cfg = LightGlueConfig(keypoint_detector_config=sp, descriptor_dim=32, num_hidden_layers=1,
                              num_attention_heads=2, filter_threshold=0.0, depth_confidence=-1.0,
                              width_confidence=-1.0, initializer_range=0.1)
        model, proc = LightGlueForKeypointMatching(cfg), LightGlueImageProcessorPil
    else:
        cfg = SuperGlueConfig(keypoint_detector_config=sp, hidden_size=32, keypoint_encoder_sizes=[8, 16],
                              gnn_layers_types=["self", "cross"], num_attention_heads=2, matching_threshold=0.0)
        model, proc = SuperGlueForKeypointMatching(cfg), SuperGlueImageProcessorPil
    model.save_pretrained(folder)
    proc(do_resize=size is not None, size=size or {"height": 480, "width": 640}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_lightglue(tmp_path_factory.mktemp("lightglue"))


@pytest.fixture(scope="module", params=["lightglue", "superglue"])
def tiny_resized(tmp_path_factory, request):
    return _tiny_lightglue(tmp_path_factory.mktemp(request.param), {"height": 64, "width": 96}, request.param)


def _texture(seed, h=120, w=160, dx=0):
    """Blocky noise (corners for SIFT and SuperPoint); ``dx`` shifts the view right by that many pixels."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4, w // 4 + 8, 3))
    return np.kron(small, np.ones((4, 4, 1)))[:h, dx:dx + w].astype(np.float32)


def _raw_model_output(folder, im0, im1, **kw):
    """The model's own outputs for one pair, run here without the code under test."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForKeypointMatching

    proc = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForKeypointMatching.from_pretrained(folder, local_files_only=True).eval()
    pair = [(im0 * 255).round().astype(np.uint8), (im1 * 255).round().astype(np.uint8)]
    inp = proc([pair], return_tensors="pt", **kw)
    with torch.no_grad():
        out = model(**inp)
    return inp["pixel_values"].shape[-2:], out


# ----------------------------------------------------------------------------- conventions, merging


def test_model_pixels_follow_the_colmap_centre_convention():
    # SuperPoint keypoint at pixel index (3, 5) of a 96x64 processed image: relative (3/96, 5/64)
    rel = np.array([[3 / 96, 5 / 64], [0.0, 0.0]])
    np.testing.assert_allclose(lm.model_pixels(rel, (96, 64), (96, 64)), [[3.5, 5.5], [0.5, 0.5]])
    # processed at half size: the centre 3.5 of processed pixel 3 is at 7.0 in the input image
    np.testing.assert_allclose(lm.model_pixels(rel, (48, 32), (96, 64)), [[(3 * 48 / 96 + 0.5) * 2,
                                                                         (5 * 32 / 64 + 0.5) * 2], [1.0, 1.0]])


def test_merge_keypoints_joins_points_within_the_tolerance():
    a = np.array([[10.0, 10.0], [50.0, 50.0]])
    b = np.array([[10.4, 10.3], [20.0, 20.0], [50.0, 50.0]])
    c = np.array([[21.5, 20.0]])  # 1.5 px from b[1]: separate at tol 1
    merged, (ia, ib, ic) = lm.merge_keypoints([a, b, c], tol=1.0)
    assert len(merged) == 4
    np.testing.assert_array_equal(merged[ia], a)  # the first seen position stands for the group
    assert ib[0] == ia[0] and ib[2] == ia[1] and ib[1] not in ia
    np.testing.assert_array_equal(merged[ib[1]], [20.0, 20.0])
    np.testing.assert_array_equal(merged[ic], c)
    merged2, (_, ib2, ic2) = lm.merge_keypoints([a, b, c], tol=2.0)
    assert len(merged2) == 3 and ic2[0] == ib2[1]


def test_resolve_matcher():
    assert lm.resolve_matcher("auto", None) == "sift"
    assert lm.resolve_matcher("auto", "some/model") == "sift+learned"
    assert lm.resolve_matcher("learned", "m") == "learned"
    with pytest.raises(ValueError, match="needs a model"):
        lm.resolve_matcher("learned", None)
    with pytest.raises(ValueError, match="unknown matcher"):
        lm.resolve_matcher("loftr", "m")


# ----------------------------------------------------------------------------- a tiny LightGlue into the database


def test_tiny_lightglue_database_keypoints_and_matches(tiny, tmp_path):
    A, B = _texture(0), _texture(1)
    images = np.stack([A, A, B])  # views 0 and 1 identical: a random LightGlue still matches each point to itself
    Ks = np.tile(np.array([[120.0, 0, 80], [0, 120.0, 60], [0, 0, 1]]), (3, 1, 1))
    cfg = FeatureConfig(matcher="learned", matcher_model=str(tiny), matcher_min_score=0.0)
    db, _, stats = build_database(images, Ks, True, tmp_path, cfg)
    d = pycolmap.Database.open(str(db))
    try:
        ids = {im.name: im.image_id for im in d.read_all_images()}
        kps = [np.asarray(d.read_keypoints(ids[f"{i:04d}.png"]))[:, :2] for i in range(3)]
        raw = {(a, b): np.asarray(d.read_matches(ids[f"{a:04d}.png"], ids[f"{b:04d}.png"]), np.int64)
               for a, b in [(0, 1), (0, 2), (1, 2)]}
    finally:
        d.close()
    assert all(len(k) > 0 for k in kps) and stats["features"] == [len(k) for k in kps]
    assert len(raw[(0, 1)]) >= 5
    for (a, b), m in raw.items():  # every raw match refers to existing keypoints of both views
        assert len(m) == 0 or (m.min() >= 0 and m[:, 0].max() < len(kps[a]) and m[:, 1].max() < len(kps[b]))
    # identical views: their keypoints coincide, and the matches join the same positions
    np.testing.assert_array_equal(kps[0], kps[1])
    m01 = raw[(0, 1)]
    assert np.mean(np.all(kps[0][m01[:, 0]] == kps[1][m01[:, 1]], axis=1)) > 0.8
    # COLMAP convention: the keypoints are the model's pixel indices + 0.5 (no resize here)
    (ph, pw), out = _raw_model_output(tiny, A, A)
    assert (ph, pw) == A.shape[:2]
    valid = out.matches.reshape(2, -1)[0] > -1
    model_xy = out.keypoints.reshape(2, -1, 2)[0][valid].numpy() * [pw, ph]
    np.testing.assert_allclose(model_xy, np.round(model_xy), atol=1e-4)  # integer indices
    db_xy = kps[0][raw[(0, 1)][:, 0]].astype(np.float64)
    np.testing.assert_allclose(db_xy - 0.5, np.round(db_xy - 0.5), atol=1e-3)  # centres: index + 0.5
    assert {tuple(p) for p in np.round(db_xy - 0.5)} == {tuple(p) for p in np.round(model_xy)}


def test_resized_processing_maps_keypoints_back_to_input_pixels(tiny_resized):
    A, B = _texture(2), _texture(2, dx=4)
    # processed at the processor's longest side (96) with the photos' aspect ratio (160x120 -> 96x72)
    (ph, pw), out = _raw_model_output(tiny_resized, A, B, size={"height": 72, "width": 96})
    assert (ph, pw) == (72, 96)
    matcher = lm.load_matcher(str(tiny_resized), "cpu", 0.0)
    got = matcher(A, B)
    m0 = out.matches.reshape(2, -1)[0]
    kp = out.keypoints.reshape(2, -1, 2).numpy()
    k0 = np.nonzero(m0.numpy() > -1)[0]
    assert len(got.xy0) == len(k0) > 0
    sx, sy = A.shape[1] / pw, A.shape[0] / ph
    np.testing.assert_allclose(got.xy0, (kp[0, k0] * [pw, ph] + 0.5) * [sx, sy], atol=1e-4)
    np.testing.assert_allclose(got.xy1, (kp[1, m0[k0]] * [pw, ph] + 0.5) * [sx, sy], atol=1e-4)
    assert got.xy0.min() > 0 and np.all(got.xy0 < [A.shape[1], A.shape[0]])


def test_sift_plus_learned_keeps_sift_keypoints_and_adds_the_learned(tiny, tmp_path):
    images = np.stack([_texture(4), _texture(4, dx=8), _texture(5)])  # 0 and 1: the same wall, moved sideways
    Ks = np.tile(np.array([[120.0, 0, 80], [0, 120.0, 60], [0, 0, 1]]), (3, 1, 1))
    base = dict(affine=False, domain_size_pooling=False)
    _, _, sift = build_database(images, Ks, True, tmp_path / "sift", FeatureConfig(**base))
    _, _, both = build_database(images, Ks, True, tmp_path / "both",
                                FeatureConfig(**base, matcher_model=str(tiny), matcher_min_score=0.0))
    assert all(b > s > 0 for s, b in zip(sift["features"], both["features"]))
    # SIFT's verified matches survive the second verification (with the learned ones added)
    assert both["pairs"][(0, 1)] >= 0.95 * sift["pairs"][(0, 1)] > 50


# ----------------------------------------------------------------------------- errors and wiring


def test_unloadable_models_fail_with_a_clear_message(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(lm.MatcherLoadError, match=r"no_such_model does not exist.*huggingface-cli download"):
        lm.load_matcher(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(lm.MatcherLoadError, match=r"could not load the matcher model .*empty.*huggingface-cli"):
        lm.load_matcher(str(empty))
    loftr = tmp_path / "loftr"
    loftr.mkdir()
    (loftr / "config.json").write_text(json.dumps({"model_type": "efficientloftr"}))
    with pytest.raises(lm.MatcherLoadError, match="efficientloftr.*order-preserving.*lightglue"):
        lm.load_matcher(str(loftr))
    # through the pose stage: fails before any feature work
    with pytest.raises(lm.MatcherLoadError, match="no_such_model"):
        build_database(np.stack([_texture(0)] * 2), np.tile(np.eye(3), (2, 1, 1)), True, tmp_path / "w",
                       FeatureConfig(matcher_model=str(missing)))
    assert not (tmp_path / "w" / "database.db").exists()


def test_the_cli_flag_reaches_the_matcher(monkeypatch, tmp_path):
    from PIL import Image

    from sparsesplat.recon.cli import main
    from sparsesplat.recon.pipeline import ReconstructConfig
    from sparsesplat.recon.poses.stage import pose_config

    asked = []

    def fake_load(model, device="auto", min_score=0.0):
        asked.append(model)
        raise lm.MatcherLoadError(f"stop after loading {model}")

    monkeypatch.setattr(lm, "load_matcher", fake_load)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((_texture(i) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    assert main(["poses", str(folder), "-o", str(tmp_path / "out"), "--matcher-model", "my/lightglue"]) == 1
    assert asked == ["my/lightglue"]
    import tyro

    cfg = tyro.cli(ReconstructConfig, args=[str(folder), "-o", str(tmp_path / "run"), "--matcher-model", "lg_dir"])
    assert pose_config(cfg).features.matcher_model == "lg_dir"
    assert pose_config(cfg).features.matcher == "auto"


# ----------------------------------------------------------------------------- exact matches -> exact poses


class ExactMatcher:
    """A perfect detector + matcher: the projections of a scene's surface points, matched where both views see
    the point (depth test), in COLMAP pixels. Proves the database, verification and mapping path."""

    def __init__(self, scene):
        self.scene = scene
        V, K = scene.cameras.viewmats.numpy(), scene.cameras.Ks.numpy()
        P = scene.points.astype(np.float64)
        self.xy, self.seen = [], []
        for v in range(len(V)):
            Xc = P @ V[v, :3, :3].T + V[v, :3, 3]
            xy = Xc[:, :2] / Xc[:, 2:] * [K[v, 0, 0], K[v, 1, 1]] + K[v, :2, 2]
            inside = (Xc[:, 2] > 0) & np.all((xy >= 1) & (xy < [scene.cameras.width - 1, scene.cameras.height - 1]), 1)
            seen = np.zeros(len(P), bool)
            col, row = np.floor(xy[inside]).astype(int).T
            seen[inside] = Xc[inside, 2] < scene.depths[v, row, col, 0] * 1.02  # not hidden by a nearer surface
            self.xy.append(xy)
            self.seen.append(seen)

    def _view(self, image):
        return next(v for v, im in enumerate(self.scene.images) if np.array_equal(im, image))

    def __call__(self, image0, image1):
        a, b = self._view(image0), self._view(image1)
        both = self.seen[a] & self.seen[b]
        return lm.PairMatches(self.xy[a][both], self.xy[b][both], np.ones(both.sum()))


def test_exact_learned_matches_give_exact_poses_on_a_wide_orbit(monkeypatch):
    s = make_scene(8, 256, 192, "orbit", n_points=3000)  # 45 degrees between views
    monkeypatch.setattr(lm, "load_matcher", lambda model, device="auto", min_score=0.0: ExactMatcher(s))
    cfg = PoseConfig(features=FeatureConfig(matcher="learned", matcher_model="exact"), refine_focal="never")
    est = estimate_poses(s.images, s.cameras.Ks.numpy(), [f"v{i}" for i in range(8)], False, cfg)
    assert est.registered == list(range(8))
    e = pose_errors(est.viewmats, s.cameras.viewmats.numpy())
    assert e["max_rotation_deg"] < 0.05 and e["max_centre_pct"] < 0.1, e


def test_efficientloftr_is_refused_because_transformers_pairs_its_matches_wrongly():
    """The evidence behind refusing EfficientLoFTR: its coarse matcher returns, per position k, the image-0 cell
    matched to image-1 cell k and the image-1 cell matched to image-0 cell k, and the keypoints (and the fine
    refinement) pair those two by k. For the permutation below that joins no true pair. When transformers
    fixes this, this test fails: then add "efficientloftr" to SUPPORTED_MODELS with its keypoint convention."""
    import torch
    from transformers import EfficientLoFTRConfig, EfficientLoFTRForKeypointMatching

    cfg = EfficientLoFTRConfig(stage_num_blocks=[1, 1, 1, 1], out_features=[8, 8, 16, 32], hidden_size=32,
                               num_attention_layers=1, num_attention_heads=8, fine_matching_slice_dim=4,
                               coarse_matching_threshold=0.0, coarse_matching_border_removal=0)
    model = EfficientLoFTRForKeypointMatching(cfg)
    perm = torch.tensor([2, 0, 3, 1])  # image-0 cell i truly matches image-1 cell perm[i]
    scores = torch.zeros(1, 4, 4)
    scores[0, torch.arange(4), perm] = 1.0
    idx, _ = model._get_matches_from_scores(scores.view(1, 2, 2, 2, 2))
    paired = set(zip(idx[0, 0].tolist(), idx[0, 1].tolist()))  # what the keypoints pair, position by position
    true = set(zip(range(4), perm.tolist()))
    assert not paired & true
