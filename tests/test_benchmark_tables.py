"""The benchmarks' results tables: which finished runs sparse_views --reuse may take, how rows from other settings
are labelled, and that a regenerated table keeps the notes written under it."""

from __future__ import annotations

import sparsesplat.benchmarks.sparse_views as sv
from sparsesplat.benchmarks.results_file import NOTES_MARKER


def test_a_saved_run_without_a_later_option_is_the_same_run_only_at_that_options_default():
    default = {"poses": "auto", "matcher_model": None, "train": {"iters": 3000, "new_flag": 0.0}}
    saved = {"poses": "auto", "train": {"iters": 3000}}  # written before matcher_model and new_flag existed
    assert sv._same_run(saved, dict(default), default)
    assert not sv._same_run(saved, {**default, "matcher_model": "lg"}, default)
    assert not sv._same_run(saved, {**default, "train": {"iters": 3000, "new_flag": 0.5}}, default)
    assert not sv._same_run(saved, {**default, "poses": "estimate"}, default)
    assert not sv._same_run({**saved, "gone": 1}, dict(default), default)  # an option the code no longer has
    # the pipeline writes what auto resolved to; the same auto asked again is the same run, another choice is not
    resolved = {"train": {"iters": 3000, "appearance": "none"}}
    assert sv._same_run(resolved, {"train": {"iters": 3000, "appearance": "auto"}}, {})
    assert not sv._same_run(resolved, {"train": {"iters": 3000, "appearance": "affine"}}, {})


def test_rows_from_other_settings_get_their_own_labelled_row(tmp_path, monkeypatch):
    monkeypatch.setattr(sv, "RESULTS", tmp_path)
    assert sv._settings("primitive=gaussian, cap=None, poses=estimate") == {
        "primitive": "gaussian", "cap": "None", "poses": "estimate"}
    row = {"scene": "lego", "protocol": "blender8", "lpips": None, "train_seconds": 1.0, "num_primitives": 10,
           "init_points": 5, "init_method": "triangulate", "ssim": 0.8, "prior": "none"}
    rows = [{**row, "seed": 0, "psnr": 16.0},
            {**row, "seed": 0, "psnr": 22.0, "variant": "poses=auto"},
            {**row, "seed": 1, "psnr": 24.0, "variant": "poses=auto"}]
    meta = {"machine": "test", "command": "c", "torch": "t", "date": "d", "settings": "poses=estimate"}
    sv.write_tables(rows, meta, "t")
    table = (tmp_path / "t.md").read_text()
    assert "| **sparsesplat (this run)** | 16.00 |" in table
    assert "| **sparsesplat, poses=auto** | 23.00 ± 1.41 |" in table  # the two posed seeds, not mixed with 16.00
    assert "seed 0 (poses=auto): 22.00" in table


def test_a_regenerated_table_keeps_the_notes_below_the_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(sv, "RESULTS", tmp_path)
    row = {"scene": "fern", "protocol": "llff3", "lpips": None, "train_seconds": 1.0, "num_primitives": 10,
           "init_points": 5, "init_method": "mvs", "ssim": 0.7, "prior": "none", "seed": 0}
    meta = {"machine": "test", "command": "c", "torch": "t", "date": "d", "settings": "schedule=fast"}
    (tmp_path / "t.md").write_text("# an old table\n\n| old | 1.00 |\n\n" + NOTES_MARKER
                                   + "\n\n## Notes (a session)\n\n- what was tried\n")
    sv.write_tables([{**row, "psnr": 23.0}], meta, "t")
    text = (tmp_path / "t.md").read_text()
    assert "| old | 1.00 |" not in text and "| **sparsesplat (this run)** | 23.00 |" in text
    table, notes = text.split(NOTES_MARKER)
    assert "## fern (llff3)" in table and notes == "\n\n## Notes (a session)\n\n- what was tried\n"
    sv.write_tables([{**row, "psnr": 24.0}], meta, "t")  # again: the notes once, after the new table
    masked = {**row, "scene": "dtu", "protocol": "dtu3", "psnr": 14.0, "psnr_masked": 16.5, "ssim_masked": 0.5}
    sv.write_tables([{**row, "psnr": 24.0}, masked, {**masked, "seed": 1, "psnr_masked": 15.5}], meta, "t")
    text = (tmp_path / "t.md").read_text()
    assert text.count("## Notes (a session)") == 1 and "| **sparsesplat (this run)** | 24.00 |" in text
    assert "Per seed (PSNR / SSIM / masked PSNR): seed 0: 14.00 / 0.700 / 16.50, seed 1: 14.00 / 0.700 / 15.50." in text


def test_rasterizer_ab_reads_trees_and_flags_and_writes_ratios_to_the_first_build(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    import pytest

    import sparsesplat.benchmarks.rasterizer_ab as ab

    here = Path(ab.__file__).resolve().parents[1]  # this checkout's root
    assert ab.parse_build(str(here)) == (here, None)  # the project's own flags
    assert ab.parse_build(f"{here}@-march=native -mno-avx512f") == (here, ["-march=native", "-mno-avx512f"])
    assert ab.parse_build(f"{here}@") == (here, [])  # a portable build
    with pytest.raises(SystemExit, match="no rasterizer/csrc/cpu"):
        ab.parse_build(str(tmp_path))

    class Fake:  # a build whose kernels take a known time
        def __init__(self, fwd, bwd):
            self.fwd, self.bwd = fwd, bwd

        def rasterize_fwd(self, *a):
            _advance(self.fwd)
            return (None,) * 7

        def rasterize_bwd(self, *a):
            _advance(self.bwd)

    clock = [0.0]

    def _advance(dt):
        clock[0] += dt

    monkeypatch.setattr(ab.time, "perf_counter", lambda: clock[0])
    views = [([None] * 5, None, None, None)] * 3
    rows = ab.time_builds([Fake(0.2, 0.4), Fake(0.1, 0.1)], views, 8, 8, 16, repeats=2)
    assert rows[0]["fwd_ms"] == pytest.approx(200) and rows[1]["bwd_ms"] == pytest.approx(100)
    assert rows[1]["fwd_speedup"] == pytest.approx(2.0) and rows[1]["bwd_speedup"] == pytest.approx(4.0)
    assert rows[1]["fwd_bwd_speedup"] == pytest.approx(3.0) and rows[0]["fwd_bwd_speedup"] == pytest.approx(1.0)

    monkeypatch.setattr(ab, "RESULTS", tmp_path)
    meta = {"machine": "m", "threads": 2, "command": "c", "date": "d", "torch": "t", "run": "r", "gaussians": 1,
            "width": 8, "height": 8, "views": 3, "repeats": 2, "tile": 16}
    for r, tree in zip(rows, ("old", "new")):
        r.update(tree=tree, rev="abc", flags="-O3")
    ab.write_tables(rows, meta, "ab")
    assert "| new (abc) | `-O3` | 100.0 | 100.0 | 2.00x | 4.00x | 3.00x |" in (tmp_path / "ab.md").read_text()
    assert json.loads((tmp_path / "ab.json").read_text())["rows"][1]["fwd_speedup"] == pytest.approx(2.0)


def test_primitives_table_gives_each_kind_its_ratios_to_the_gaussians_of_its_scene(tmp_path, monkeypatch):
    import sparsesplat.benchmarks.primitives as pb

    monkeypatch.setattr(pb, "RESULTS", tmp_path)
    row = {"scene": "lego", "ssim": 0.9, "num_primitives": 100}
    rows = [{**row, "primitive": "gaussian", "psnr": 24.5, "train_seconds": 100.0, "render_ms": 20.0, "ply_mb": 2.0},
            {**row, "primitive": "ges", "psnr": 24.7, "train_seconds": 150.0, "render_ms": 30.0, "ply_mb": 2.1}]
    pb.write_table(rows, {"machine": "m", "command": "c", "torch": "t", "date": "d"}, "p")
    table = (tmp_path / "p.md").read_text()
    assert "| ges | 24.70 | 0.900 | 100 | 2.1 | 150 | 30.0 | 1.50x | 1.50x |" in table
    assert "| gaussian | 24.50 | 0.900 | 100 | 2.0 | 100 | 20.0 | 1.00x | 1.00x |" in table


def test_the_grid_takes_any_reconstruct_option_after_the_separator(tmp_path):
    """What follows `--` is parsed as `sparsesplat reconstruct` options: every run copies them, with its own
    scene, protocol, seed and folder, no checkpoints unless asked, and a named schedule; the table's settings
    line lists what differs from the CLI defaults."""
    from types import SimpleNamespace

    import pytest

    args = SimpleNamespace(out="t", results=str(tmp_path), cap=None, prior=["none"],
                           template=sv.reconstruct_settings(["--fields", "2", "--primitive", "ges", "--iters", "500",
                                                             "--default.grow-grad2d", "0.0005"]))
    a, b = sv.run_config("lego", 0, args), sv.run_config("dtu", 1, args)
    assert (a.primitive, a.train.fields, a.train.iters, a.train.default.grow_grad2d) == ("ges", 2, 500, 0.0005)
    assert (a.protocol, b.protocol, a.train.seed, b.train.seed) == ("blender8", "dtu3", 0, 1)
    assert a.out == tmp_path / "runs" / "t_lego_s0" and a.overwrite and a.train.checkpoint_every == 0
    assert a.schedule == "fast" and b.train is not a.train  # each run its own copy
    line = sv.settings_line(args)
    assert line.startswith("schedule=fast, ") and "primitive=\"ges\"" in line and "train.fields=2" in line
    assert "train.default.grow_grad2d=0.0005" in line and "train.dropout" not in line  # defaults are not listed
    full = SimpleNamespace(**{**vars(args), "template": sv.reconstruct_settings(["--full"])})
    assert sv.run_config("fern", 0, full).schedule == "full"
    with pytest.raises(SystemExit, match="give priors as the benchmark's --prior"):
        sv.reconstruct_settings(["--prior", "depth"])
    with pytest.raises(SystemExit):  # not a reconstruct option: tyro says so
        sv.reconstruct_settings(["--no-such-option", "1"])


def test_ssim_benchmark_times_both_kernels_and_writes_their_ratio(tmp_path, monkeypatch):
    import json

    import pytest

    import sparsesplat.benchmarks.ssim as sb

    spent = {"torch": 0.03, "cpu": 0.01}  # a known cost per kernel instead of the clock
    monkeypatch.setattr(sb, "step_seconds", lambda kernel, img, ref: spent[kernel])
    monkeypatch.setattr(sb, "RESULTS", tmp_path)
    sb.main(["--sizes", "24x16", "--threads", "1", "--repeats", "3", "--out", "s"])
    row = json.loads((tmp_path / "s.json").read_text())["rows"][0]
    assert (row["width"], row["height"], row["threads"]) == (24, 16, 1)
    assert row["speedup"] == pytest.approx(3.0) and row["torch_ms"] == pytest.approx(30.0)
    assert "| 24x16 | 1 | 30.0 | 10.0 | 3.00x |" in (tmp_path / "s.md").read_text()
