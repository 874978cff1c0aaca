"""`sparsesplat export` and `sparsesplat view FILE` as a user meets them: formats by suffix, edits, the
summary line, refusals in one line, and splat files opened by the viewer's loader."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sparsesplat.rasterizer.kinds.gaussian.ply import save_gaussians_ply_raw
from sparsesplat.rasterizer.splat_formats import read_splats

from test_splat_formats import random_scene


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsesplat.recon.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    scene = random_scene(n=500, seed=11)
    save_gaussians_ply_raw(run / "scene.ply", scene.means, scene.quats, scene.log_scales, scene.opacity_logits,
                           scene.sh)
    (run / "config.yaml").write_text("primitive: gaussian\n")
    return run, scene


def test_export_a_run_with_edits_and_a_summary(tmp_path, run_folder):
    run, scene = run_folder
    out = tmp_path / "shared.spz"
    r = run_cli("export", run, "-o", out, "--sh-degree", "1", "--min-opacity", "0.5", "--crop", -1, -1, -1, 1, 1, 1)
    assert r.returncode == 0, r.stderr
    keep = (torch.sigmoid(scene.opacity_logits) >= 0.5) & (scene.means.abs() <= 1).all(dim=1)
    got = read_splats(out)
    assert got.means.shape[0] == int(keep.sum()) and got.sh.shape[1] == 4
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out}") and f"{int(keep.sum()):,} splats of 500" in line
    assert "SH degree 1" in line and "of the standard PLY" in line
    # a splat file converts too, and an existing output needs --overwrite
    r = run_cli("export", out, "-o", tmp_path / "again.compressed.ply")
    assert r.returncode == 0, r.stderr
    assert read_splats(tmp_path / "again.compressed.ply").means.shape[0] == int(keep.sum())
    r = run_cli("export", run, "-o", out)
    assert r.returncode == 1 and "--overwrite" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["-o", "{tmp}/x.obj"], "unknown splat format"),
    (["-o", "{tmp}/nowhere/x.spz"], "does not exist; create it"),
    (["-o", "{tmp}/x.spz", "--sh-degree", "5"], "SH degree 5 must be 0, 1, 2 or 3"),
    (["-o", "{tmp}/x.spz", "--crop", "1", "0", "0", "0", "1", "1"], "crop box"),
    (["-o", "{tmp}/x.spz", "--min-opacity", "2"], "--min-opacity must be in [0.0, 1.0]"),
])
def test_export_refusals_are_one_line(tmp_path, run_folder, args, message):
    run, _ = run_folder
    r = run_cli("export", run, *[a.format(tmp=tmp_path) for a in args])
    assert r.returncode in (1, 2) and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.spz")) and not list(tmp_path.glob(".*.tmp"))


def test_export_refuses_other_primitive_kinds(tmp_path, run_folder):
    run, _ = run_folder
    (run / "config.yaml").write_text("primitive: triangle\n")
    r = run_cli("export", run, "-o", tmp_path / "t.spz")
    assert r.returncode == 1 and "triangle scene cannot be written" in r.stderr and "mesh" in r.stderr


def test_export_refuses_nan_and_drops_it_on_request(tmp_path, run_folder):
    run, scene = run_folder
    scene.means[3] = float("nan")
    save_gaussians_ply_raw(run / "scene.ply", scene.means, scene.quats, scene.log_scales, scene.opacity_logits,
                           scene.sh)
    r = run_cli("export", run, "-o", tmp_path / "n.splat")
    assert r.returncode == 1 and "1 of 500 splats hold NaN" in r.stderr and not (tmp_path / "n.splat").exists()
    r = run_cli("export", run, "-o", tmp_path / "n.splat", "--drop-invalid")
    assert r.returncode == 0 and "dropped 1 by invalid" in r.stdout
    assert read_splats(tmp_path / "n.splat").means.shape[0] == 499


@pytest.mark.parametrize("suffix", [".spz", ".sog", ".splat", ".compressed.ply"])
def test_the_viewer_opens_splat_files(tmp_path, suffix):
    from sparsesplat.recon.view_run import load_run_for_viewer
    from sparsesplat.rasterizer.splat_formats import write_splats

    write_splats(tmp_path / f"s{suffix}", random_scene(n=64, seed=2))
    scene = load_run_for_viewer(tmp_path / f"s{suffix}")
    prims = scene.get_primitives()
    assert len(prims) == 64 and scene.cameras is None and f"s{suffix}" in scene.title
