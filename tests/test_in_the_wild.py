"""Photos taken in the wild on a synthetic forward scene (12 views, llff6: 6 train, held-out views unaltered):
per-photo appearance recovers photos whose exposure and white balance differ, robust transient weights keep a
moving occluder out, and neither costs a scene without them. Plus the pieces: the affine fit, the half-image
score, the transient regions, photo-folder masks.

Measured with this schedule (600 steps, 96x72): unaltered 26.10 dB (appearance on: 25.77, seed 0); exposure and white
balance changed (gain 0.6-1.4, white balance 0.85-1.15): 22.86 -> 25.14 dB with appearance; with an occluder in
half the training photos as well: 20.85 off, 22.59 appearance, 24.70 appearance + robust transients.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from sparsesplat.datasets import load
from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.datasets.writers import write_llff
from sparsesplat.recon.appearance import PhotoAppearance, apply_affine, fit_affine, half_image_psnr
from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
from sparsesplat.recon.trainer import TrainConfig
from sparsesplat.recon.transients import transient_inliers

W, H = 96, 72


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """The clean scene, the same with a random look per training photo, and with an occluder as well."""
    root = tmp_path_factory.mktemp("wild")
    path = write_llff(root / "scene", make_scene(n_views=12, width=W, height=H, kind="forward", n_points=2000,
                                                 supersample=2))
    clean = load(path, protocol="llff6")
    rng = np.random.default_rng(0)
    looks = clean.images.clone()
    gains = {}
    for i in clean.train_ids:
        f = rng.uniform(0.6, 1.4) * rng.uniform(0.85, 1.15, 3)
        gains[i] = f
        looks[i] = (looks[i] * torch.tensor(f, dtype=torch.float32)).clamp(0, 1)
    occluded = looks.clone()
    for k, i in enumerate(clean.train_ids):
        if k % 2 == 0:  # a 24x40 "person" somewhere else in every other training photo
            x0, y0 = int(rng.integers(0, W - 30)), int(rng.integers(0, H - 40))
            occluded[i, y0:y0 + 40, x0:x0 + 24] = torch.tensor(rng.uniform(0, 1, 3), dtype=torch.float32)
    variants = {}
    for name, images in (("clean", clean.images), ("looks", looks), ("occluded", occluded)):
        v = copy.copy(clean)
        v.images = images
        variants[name] = v
    return path, variants, gains, root


_RUNS: dict = {}


def run(scenes, variant: str, **train) -> dict:
    key = (variant, tuple(sorted(train.items())))
    if key not in _RUNS:
        path, variants, _, root = scenes
        t = TrainConfig(iters=600, sh_degree=1, sh_every=100, checkpoint_every=0, **train)
        t.default.refine_start_iter, t.default.refine_stop_iter = 100, 450
        out = root / f"run_{len(_RUNS)}"
        cfg = ReconstructConfig(data=path, out=out, protocol="llff6", train=t)
        _RUNS[key] = (reconstruct(cfg, log=lambda *_: None, scene=variants[variant]), out)
    return _RUNS[key][0]


pytestmark = pytest.mark.slow


def test_appearance_recovers_photos_of_different_looks(scenes):
    off = run(scenes, "looks", appearance="none")
    on = run(scenes, "looks", appearance="affine")
    assert on["psnr"] > off["psnr"] + 1.2, (on["psnr"], off["psnr"])
    assert on["psnr_appearance_fit"] > on["psnr"] - 1.0  # the fitted look scores about as well as the neutral one


def test_appearance_costs_next_to_nothing_on_photos_of_one_look(scenes):
    off = run(scenes, "clean", appearance="none")
    on = run(scenes, "clean", appearance="affine")
    # measured at seeds 0 / 1 / 2 (2026-12-07): -0.33 / -0.17 / -0.12 dB. Per-photo looks turn the random
    # backgrounds off (--random-background auto), and the run's float rounding moves one seed by 0.2 dB; a look
    # that shifts the colours would cost several dB
    assert on["psnr"] > off["psnr"] - 0.5, (on["psnr"], off["psnr"])


def test_robust_transients_keep_a_moving_occluder_out(scenes):
    # without the default depth smoothness, which also keeps much of the occluder out (appearance alone: 24.5 dB
    # with it, 22.6 without; both: 24.8), so that the comparison measures what the transients add
    flat = dict(depth_smoothness_weight=0.0)
    look = run(scenes, "occluded", appearance="affine", **flat)
    both = run(scenes, "occluded", appearance="affine", transients="robust", **flat)
    off = run(scenes, "occluded", appearance="none", **flat)
    # leaving the occluder out gained 0.9-1.1 dB where this was written and 0.71 dB on an AMD EPYC build
    # (-march=native: other SIMD sums); a mask that leaves nothing out gains nothing
    assert both["psnr"] > look["psnr"] + 0.5 and look["psnr"] > off["psnr"] + 0.8, (both, look, off)


def test_learned_looks_follow_the_photos_and_are_written_for_the_viewer(scenes):
    from sparsesplat.recon.appearance import read_appearance_json
    from sparsesplat.recon.view_run import load_run_for_viewer

    run(scenes, "looks", appearance="affine")
    out = _RUNS[("looks", (("appearance", "affine"),))][1]
    _, variants, gains, _ = scenes
    looks = read_appearance_json(out / "appearance.json")
    scene = variants["looks"]
    # the learned transform's brightness follows each photo's gain, relative to the mean (the neutral look
    # is the photos' common look, so only ratios are defined)
    learned = np.array([float(torch.diagonal(looks[scene.names[i]][:, :3]).mean()) for i in scene.train_ids])
    applied = np.array([gains[i].mean() for i in scene.train_ids])
    assert np.corrcoef(learned, applied)[0, 1] > 0.9, (learned, applied)
    viewer_scene = load_run_for_viewer(out)
    assert set(viewer_scene.looks) == {scene.names[i] for i in scene.train_ids}


# ------------------------------------------------------------------------------------------------ pieces


def test_fit_affine_recovers_a_known_transform():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 30, 3, generator=g)
    m = torch.tensor([[0.9, 0.1, 0.0, 0.05], [0.0, 1.2, -0.1, 0.0], [0.05, 0.0, 0.8, -0.02]])
    assert torch.allclose(fit_affine(x, apply_affine(x, m), ridge=0.0), m, atol=1e-5)
    # the half-image score of a render that differs from the photo by that transform only is perfect
    assert half_image_psnr(x, apply_affine(x, m).clamp(0, 1)) > 35


def test_photo_appearance_starts_neutral_and_its_penalty_grows_away_from_it():
    app = PhotoAppearance(3)
    img = torch.rand(5, 4, 3)
    assert torch.equal(app.apply(img, 1).detach(), img) and float(app.regularization(1).detach()) == 0.0
    with torch.no_grad():
        app.params[1, 0, 0] += 0.5
        app.params[1, 2, 3] -= 0.2
    assert abs(float(app.regularization(1).detach()) - (0.25 + 0.04)) < 1e-6


def test_transient_regions_are_found_and_edges_are_not():
    g = torch.Generator().manual_seed(1)
    photo = torch.rand(60, 80, 3, generator=g) * 0.1 + 0.4
    render = photo + torch.randn(60, 80, 3, generator=g) * 0.01
    render[:, 40:41] += 0.5  # a thin line of error: an edge the scene has not resolved yet
    render[10:30, 10:25] = 0.9  # a blob: an object that was not in this photo
    keep = transient_inliers(render, photo)
    assert keep.shape == (60, 80, 1)
    assert float(keep[10:30, 10:25].max()) == 0.0  # the blob is out, borders included
    assert float(keep[:, 36:45].mean()) > 0.95  # the line stays in
    assert float(keep.mean()) > 0.85


def test_photo_folder_masks_are_loss_masks(tmp_path):
    from sparsesplat.datasets.photos import mask_for

    for i in range(3):
        Image.fromarray(np.full((24, 32, 3), 100 + i, np.uint8)).save(tmp_path / f"IMG_{i}.jpg")
    (tmp_path / "masks").mkdir()
    mask = np.full((24, 32), 255, np.uint8)
    mask[:, :8] = 0
    Image.fromarray(mask).save(tmp_path / "masks" / "IMG_0.jpg.png")  # COLMAP's naming
    Image.fromarray(mask).save(tmp_path / "masks" / "IMG_1.png")  # same stem
    assert mask_for(tmp_path / "IMG_2.jpg", tmp_path / "masks") is None
    scene = load(tmp_path, format="photos")
    assert scene.loss_masks and scene.masks is not None
    assert float(scene.masks[0, :, :8].max()) == 0.0 and float(scene.masks[0, :, 8:].min()) == 1.0
    assert float(scene.masks[2].min()) == 1.0  # a photo without a mask keeps every pixel


def test_the_viewer_renders_a_photos_look():
    from sparsesplat.rasterizer import Cameras, Gaussians
    from sparsesplat.viewer.render_view import RenderSettings, render_cameras

    n = 200
    g = torch.Generator().manual_seed(3)
    prims = Gaussians(means=torch.randn(n, 3, generator=g) * 0.3, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                      scales=torch.full((n, 3), 0.08), opacities=torch.full((n,), 0.9),
                      colors=torch.tensor([[0.3, 0.4, 0.5]]).repeat(n, 1))
    view = torch.eye(4)
    view[2, 3] = 3.0
    cams = Cameras(view[None], torch.tensor([[[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]]]), 48, 32)
    neutral = render_cameras(prims, cams, RenderSettings(backend="torch")).image.astype(float)
    look = (1.5, 0, 0, 0, 0, 1, 0, 0.1, 0, 0, 0.5, 0)  # red x1.5, green +0.1, blue x0.5
    shot = render_cameras(prims, cams, RenderSettings(backend="torch", look=look)).image.astype(float)
    lit = neutral[..., 0] > 60  # where the scene covers the frame (the background stays as the look maps it)
    assert np.allclose(shot[lit, 0], np.clip(neutral[lit, 0] * 1.5, 0, 255), atol=1.5)
    assert np.allclose(shot[lit, 1], np.clip(neutral[lit, 1] + 25.5, 0, 255), atol=1.5)
    assert np.allclose(shot[lit, 2], neutral[lit, 2] * 0.5, atol=1.5)
