"""A new user's first hour with the CLI (issue 16): help that explains, failures that leave nothing behind,
output files like any other tool's, logs that read well in a terminal and in a file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, umask=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "sparsesplat.recon.cli", *map(str, args)], capture_output=True, text=True,
        timeout=timeout, env=env, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    from sparsesplat.recon.io import write_json

    old = os.umask(umask)
    try:
        write_json({"a": 1}, tmp_path / "m.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o666 & ~umask


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from sparsesplat.datasets.synthetic import make_scene
    from sparsesplat.datasets.writers import write_colmap_text

    scene = make_scene(n_views=10, width=48, height=36, kind="forward", n_points=600, supersample=1)
    return write_colmap_text(tmp_path_factory.mktemp("data") / "scene", scene)


TINY = ["--protocol", "llff3", "--sh-degree", "0", "--init", "sfm", "--test-pose-steps", "0"]


def test_a_failed_start_leaves_no_run_folder_and_the_retry_runs(tmp_path, tiny_scene):
    out = tmp_path / "run"
    r = run_cli("reconstruct", tmp_path / "no_such_scene", "-o", out)
    assert r.returncode == 1 and "no_such_scene" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    r = run_cli("reconstruct", tiny_scene, "-o", out, "--iters", "5", *TINY)
    assert r.returncode == 0, r.stderr
    assert "already exists" not in r.stderr and (out / "scene.ply").is_file()


def test_no_progress_bar_before_an_early_error(tmp_path):
    r = run_cli("reconstruct", tmp_path / "no_such_scene", "-o", tmp_path / "run")
    assert r.returncode == 1
    assert r.stderr.startswith("sparsesplat: error:") and "training" not in r.stderr, r.stderr


def test_progress_off_a_terminal_is_plain_lines_and_files_follow_the_umask(tmp_path, tiny_scene):
    out = tmp_path / "run"
    r = run_cli("reconstruct", tiny_scene, "-o", out, "--iters", "20", *TINY, umask=0o022)
    assert r.returncode == 0, r.stderr
    # plain periodic lines, the last one complete (never cut to "20/…"), no terminal control codes
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("training ")]
    assert len(lines) >= 2 and lines[-1].startswith("training 20/20 "), r.stderr
    assert "ETA" in lines[0] and "loss" in lines[0]
    assert "…" not in r.stderr and "\r" not in r.stderr and "\x1b[" not in r.stderr
    # every written file follows the umask, like any other tool's output
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes and all(m == 0o644 for m in modes.values()), modes


def test_progress_on_a_terminal_is_a_live_bar():
    import io

    from rich.console import Console

    from sparsesplat.recon.progress import TrainingProgress
    from sparsesplat.recon.trainer import StepStats

    buf = io.StringIO()
    with TrainingProgress(10, console=Console(file=buf, force_terminal=True, width=100)) as bar:
        bar.log("loading the scene")
        assert "training" not in buf.getvalue()
        for step in range(1, 11):
            bar.update(StepStats(step=step, loss=0.1, psnr=20.0, num_primitives=5, seconds=0.0))
    assert "10/10" in buf.getvalue() and "loading the scene" in buf.getvalue()


def test_a_failed_overwrite_keeps_the_previous_run(tmp_path, tiny_scene):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    r = run_cli("reconstruct", tmp_path / "no_such_scene", "-o", out, "--overwrite")
    assert r.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and (out / "metrics.json").read_text() == "{}"


def test_a_start_that_fails_after_writing_removes_what_it_wrote(tmp_path, tiny_scene, monkeypatch):
    """A failure between the first written file and the first training step (here: building the trainer)."""
    from sparsesplat.recon import pipeline
    from sparsesplat.recon.trainer import TrainConfig

    written = []

    class Broken:
        def __init__(self, *a, **k):
            written.extend(p.name for p in (tmp_path / "run").iterdir())
            raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "Trainer", Broken)
    cfg = pipeline.ReconstructConfig(data=tiny_scene, out=tmp_path / "run", protocol="llff3", init="sfm",
                                     train=TrainConfig(iters=5, sh_degree=0))
    with pytest.raises(RuntimeError, match="boom"):
        pipeline.reconstruct(cfg, log=lambda *_: None)
    assert "config.yaml" in written and not (tmp_path / "run").exists()


def test_the_scene_header_says_how_many_views_the_protocol_chose_of_how_many():
    from sparsesplat.datasets import load

    example = REPO / "examples" / "synthetic_forward"
    total = len(list((example / "images").iterdir()))
    scene = load(example, protocol="llff6")
    assert len(scene) < total
    assert f"{len(scene)} of {total} images (protocol llff6's views)" in scene.summary()
    assert f"  {total} images," in load(example).summary()


@pytest.mark.parametrize("args, flag", [
    (["--iters", "-5"], "--iters"),
    (["--dropout", "1.5"], "--dropout"),
    (["--scale", "0"], "--downscale"),
    (["--port", "70000"], "--port"),
    (["--priors.pseudo.probability", "-0.1"], "--priors.pseudo.probability"),
    (["--default.refine-every", "0"], "--default.refine-every"),
    (["--lrs.means", "nan"], "--lrs.means"),
    (["--binocular-resolution", "0"], "--binocular-resolution"),
])
def test_out_of_range_options_are_refused_at_parse_time(tmp_path, args, flag):
    out = tmp_path / "run"
    r = run_cli("reconstruct", tmp_path / "no_such_scene", "-o", out, *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sparsesplat: error: {flag} must be"), r.stderr
    assert not out.exists()


def _commands():
    from sparsesplat.recon import cli

    return {"reconstruct": cli.Reconstruct(data=Path("d"), out=Path("o")), "view": cli.View(folder=Path("f")),
            "inspect": cli.Inspect(data=Path("d")), "poses": cli.Poses(data=Path("d"), out=Path("o")),
            "info": cli.Info(), "export": cli.Export(source=Path("r"), out=Path("o.spz"))}


def test_every_numeric_option_has_its_range_checked():
    """Defaults pass; NaN, and -1 where 0 is the lower bound, are refused for every int/float option, and the
    message names the option as --help spells it."""
    import copy
    import math

    from sparsesplat.recon.options import OptionRangeError, check_ranges, flag, numeric_fields

    for name, cmd in _commands().items():
        check_ranges(cmd)
        help_text = run_cli(name, "--help", env={**os.environ, "COLUMNS": "200"}).stdout
        for path, _, field_name in numeric_fields(cmd):
            assert flag(path) in help_text, (name, path)
            for bad in (math.nan, -1):
                broken = copy.deepcopy(cmd)
                owner = broken
                for part in path.split(".")[:-1]:
                    owner = getattr(owner, part)
                setattr(owner, field_name, type(getattr(owner, field_name))(bad) if bad == bad else bad)
                with pytest.raises(OptionRangeError, match=flag(path).replace(".", r"\.")):
                    check_ranges(broken)


def test_colmap_log_goes_to_the_run_folder_and_the_terminal_shows_stages(tmp_path):
    import numpy as np
    from PIL import Image

    from sparsesplat.datasets.synthetic import make_scene

    s = make_scene(5, 256, 192, "forward", n_points=10)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, im in enumerate(s.images):
        Image.fromarray(np.round(im * 255).astype(np.uint8)).save(photos / f"img_{i}.png")
    out = tmp_path / "poses"
    r = run_cli("poses", photos, "-o", out, "--points", "sparse")
    assert r.returncode == 0, r.stderr
    terminal = (r.stdout + r.stderr).splitlines()
    assert len(terminal) <= 15, "\n".join(terminal)
    assert not any(".cc:" in ln for ln in terminal), "\n".join(terminal)  # glog lines: "I2026... sift.cc:754] ..."
    assert any("features" in ln for ln in terminal) and any("mapping" in ln for ln in terminal)
    assert any(str(out / "logs" / "colmap.log") in ln for ln in terminal)
    colmap_log = (out / "logs" / "colmap.log").read_text()
    assert "Feature extraction" in colmap_log and colmap_log.count("\n") > 20


def _help(*args) -> str:
    r = run_cli(*args, "--help", env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def _help_options(text: str) -> dict[str, str]:
    """{option: its description} from tyro's boxed help (the description on the option's row or below it),
    without the "(default: ...)" / "(required)" tail."""
    import re

    opts, cur = {}, None
    for ln in text.splitlines():
        m = re.match(r"^│ (.*?)\s*│$", ln)
        row = m.group(1) if m else None
        if row is not None and row.startswith("-"):
            cur, first = re.split(r"\s{2,}", row, maxsplit=1) if "  " in row else (row, "")
            opts[cur] = first
        elif row is not None and cur is not None and row.startswith("      "):
            opts[cur] += " " + row.strip()
        else:
            cur = None
    tail = r"(\((default|required|fixed)[^)]*\)\s*)+$"
    return {o: re.sub(tail, "", " ".join(d.split())).strip() for o, d in opts.items()}


@pytest.mark.parametrize("sub", ["reconstruct", "view", "export", "poses", "inspect", "info"])
def test_every_option_has_a_description_in_help(sub):
    text = _help(sub)
    opts = _help_options(text)
    assert len(opts) >= 2
    missing = [o for o, d in opts.items() if not d]
    assert not missing, f"options without a description in `sparsesplat {sub} --help`: {missing}"
    assert "{None}" not in text  # an optional value shows as NAME, not as tyro's {None}|STR


def test_help_speaks_to_users_and_shows_the_short_path_first():
    top = _help().strip().splitlines()
    description = next(ln for ln in top[1:] if ln.strip())
    assert "tyro" not in description and "dataclass" not in description and "photos" in description
    text = _help("reconstruct")
    assert "posed views" not in text and "photos" in text.split("╭")[0]
    first = [o.split(",")[0].split()[0] for o in _help_options(text)][:9]
    # what to read and where to write (shared with `poses`), then what to build
    assert first == ["-h", "-o", "--protocol", "--format", "--scale", "--overwrite", "--primitive", "--full",
                     "--schedule"], first
    opts = _help_options(text)
    for option in ("--format {auto,photos,colmap,blender,llff,dtu}", "--primitive {gaussian,ges,triangle,convex}",
                   "--device {auto,cpu,cuda}", "--rasterize-mode {classic,antialiased}",
                   "--strategy {default,mcmc,convex}"):
        assert option in opts, option
    for option in ("--backend STR",):  # choices named in the description
        assert "cpu" in opts[option] or "mcmc" in opts[option], (option, opts[option])
