"""benchmarks/sparse_views: which finished runs --reuse may take, and how rows from other settings are labelled."""

from __future__ import annotations

import sparsesplat.benchmarks.sparse_views as sv


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
