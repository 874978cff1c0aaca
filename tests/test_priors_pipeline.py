"""``reconstruct --prior depth repair diffusion`` end to end on a small synthetic scene with tiny random
models loaded by path; the run folder shows each prior's work; clear errors for missing models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.datasets.writers import write_colmap_text
from sparsesplat.priors.pseudo_views import PseudoViewConfig, refresh_count
from sparsesplat.priors.repair.scene import SceneRepairConfig
from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
from sparsesplat.recon.prior_hooks import PriorSettings
from sparsesplat.recon.trainer import TrainConfig

from sparsesplat.priors.testing import make_tiny_dpt, make_tiny_img2img


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    scene = make_scene(n_views=10, width=64, height=48, kind="forward", n_points=1500, supersample=2)
    return write_colmap_text(tmp_path_factory.mktemp("data") / "scene", scene)


def _cfg(data, out, prior, iters=90, **kw):
    train = TrainConfig(iters=iters, sh_degree=1, sh_every=100, checkpoint_every=0)
    train.default.refine_start_iter, train.default.refine_stop_iter = 30, 60
    settings = PriorSettings(loo_steps=20, repair=SceneRepairConfig(steps=15, crop=32, batch=2, width=8),
                             pseudo=PseudoViewConfig(start=0.3, refresh_every=25, probability=0.5))
    return ReconstructConfig(data=data, out=out, protocol="llff3", train=train, init="sfm", prior=prior,
                             priors=settings, **kw)


@pytest.mark.slow
def test_all_priors_together_leave_their_traces(scene_dir, tmp_path):
    pytest.importorskip("diffusers")
    dpt = make_tiny_dpt(tmp_path / "dpt")
    sd = make_tiny_img2img(tmp_path / "sd")
    out = tmp_path / "run"
    cfg = _cfg(scene_dir, out, ("depth", "repair", "diffusion"), depth_model=str(dpt), diffusion_model=str(sd))
    lines = []
    metrics = reconstruct(cfg, log=lines.append)
    pri = out / "priors"
    # depth: cached prior per training view and a picture of each
    assert len(list((pri / "depth").glob("*.npy"))) == 3 and len(list((pri / "depth").glob("*.png"))) == 3
    # repair: 2 leave-one-out pairs per training view, the trained network and its loss
    assert len(list((pri / "repair" / "pairs").glob("loo_*.png"))) == 6
    assert (pri / "repair" / "scene_repairer.pt").is_file()
    assert len((pri / "repair" / "repair_loss.csv").read_text().splitlines()) == 1 + 15
    # pseudo views: one folder per refresh (refreshes at 27, 52, 77), render | repaired per view
    n = refresh_count(90, cfg.priors.pseudo)
    assert n == 3 and sorted(p.name for p in (pri / "pseudo").iterdir()) == ["r01", "r02", "r03"]
    assert len(list((pri / "pseudo" / "r01").glob("*.png"))) == 9
    assert metrics["pseudo_refreshes"] == n and metrics["prior"] == ["depth", "repair", "diffusion"]
    # loss curves: depth losses on training views and the pseudo-view loss, from their start steps on
    rows = [r.split(",") for r in (pri / "losses.csv").read_text().splitlines()[1:]]
    names = {r[0] for r in rows}
    assert {"depth_pearson", "depth_ranking", "depth_patch", "pseudo_view"} <= names
    assert min(int(r[1]) for r in rows if r[0] == "depth_pearson") == 9  # depth_start 0.1 of 90 steps
    assert min(int(r[1]) for r in rows if r[0] == "pseudo_view") >= 27
    assert any("leave-one-out" in ln for ln in lines)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["psnr"] == pytest.approx(metrics["psnr"])


def test_repair_prior_needs_no_downloads(scene_dir, tmp_path):
    out = tmp_path / "run"
    metrics = reconstruct(_cfg(scene_dir, out, ("repair",), iters=60), log=lambda *_: None)
    assert metrics["pseudo_refreshes"] == refresh_count(60, _cfg(scene_dir, out, ("repair",)).priors.pseudo)
    assert not (out / "priors" / "depth").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsesplat.recon.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_missing_model_folder_is_a_clear_error(scene_dir, tmp_path):
    r = _cli("reconstruct", scene_dir, "-o", tmp_path / "run", "--protocol", "llff3", "--iters", "5",
             "--prior", "depth", "--depth-model", tmp_path / "no_model")
    assert r.returncode == 1
    assert "depth model folder" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = _cli("reconstruct", scene_dir, "-o", tmp_path / "run2", "--protocol", "llff3", "--iters", "5",
             "--prior", "diffusion", "--diffusion-model", tmp_path / "nope")
    assert r.returncode == 1 and "diffusion model folder" in r.stderr


def test_cli_accepts_combined_priors(scene_dir, tmp_path):
    r = _cli("reconstruct", "--help")
    assert "--prior" in r.stdout and "--depth-model" in r.stdout and "--diffusion-model" in r.stdout
    r = _cli("reconstruct", scene_dir, "-o", tmp_path / "run", "--prior", "bogus")
    assert r.returncode == 2
