"""Benchmark sweeps on Ray (benchmarks/sweep.py, sparse_views --workers): the same table as one by one, a worker
killed mid-run is retried, a run that keeps failing is reported by name while the rest finish, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sparsesplat.benchmarks.sparse_views as sv
from sparsesplat.benchmarks import sweep

ray = pytest.importorskip("ray", reason="Ray is the sweep engine (pip install -e '.[cluster]')")

REPO = Path(__file__).resolve().parents[1]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/ by name


def _sparse_views(results: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "sparsesplat.benchmarks.sparse_views", "--scenes", "example", "--seeds", "0", "1",
           "2", "3", "--results", str(results), "--out", "grid", *extra, "--", "--iters", "6", "--init", "random"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((results / "grid.json").read_text())


def test_a_sweep_of_four_runs_on_two_ray_workers_writes_the_table_of_running_them_one_by_one(tmp_path):
    one_by_one = _sparse_views(tmp_path / "seq", "--threads-per-run", "1")
    on_ray = _sparse_views(tmp_path / "ray", "--workers", "2", "--threads-per-run", "1")
    assert on_ray["meta"]["missing"] == {}
    key = ("seed", "psnr", "ssim", "num_primitives", "init_points", "steps")
    seq_rows = sorted(tuple(r[k] for k in key) for r in one_by_one["rows"])
    ray_rows = sorted(tuple(r[k] for k in key) for r in on_ray["rows"])
    assert [r[0] for r in seq_rows] == [0, 1, 2, 3]
    assert ray_rows == seq_rows  # one thread per run: training is deterministic, wherever it ran
    table = lambda p: [line for line in p.read_text().splitlines() if "this run" in line or "Per seed" in line]
    strip_seconds = lambda rows: [" | ".join(c for i, c in enumerate(line.split(" | ")) if i != 4) for line in rows]
    assert strip_seconds(table(tmp_path / "ray" / "grid.md")) == strip_seconds(table(tmp_path / "seq" / "grid.md"))
    # a finished run is never run again: --reuse takes all four without starting Ray
    again = subprocess.run([sys.executable, "-m", "sparsesplat.benchmarks.sparse_views", "--scenes", "example",
                            "--seeds", "0", "1", "2", "3", "--results", str(tmp_path / "ray"), "--out", "grid",
                            "--workers", "2", "--reuse", "--", "--iters", "6", "--init", "random"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("reusing the finished run") == 4 and "sweep:" not in again.stderr


def _dies_once(payload):
    """A run whose worker process is killed (SIGKILL, as the OOM killer or a lost node would) the first time."""
    import signal

    marker_dir, name = payload
    marker = Path(marker_dir) / f"{name}.started"
    if name == "b" and not marker.exists():
        marker.write_text("1")
        time.sleep(1.0)  # the start has reached the tracker
        os.kill(os.getpid(), signal.SIGKILL)
    return name * 2


def _always_fails(payload):
    if payload == "c":
        raise ValueError("the photos of c do not load")
    return payload.upper()


def test_a_worker_killed_mid_run_is_retried_and_the_sweep_finishes(tmp_path):
    jobs = {n: (str(tmp_path), n) for n in "abcd"}
    outcome = sweep.run_sweep(jobs, _dies_once, workers=2, retries=2, show_progress=False)
    assert outcome.failed == {}
    assert outcome.results == {"a": "aa", "b": "bb", "c": "cc", "d": "dd"}
    assert outcome.attempts["b"] == 2 and all(outcome.attempts[n] == 1 for n in "acd")


def test_a_run_that_keeps_failing_is_reported_by_name_after_its_retries_and_the_rest_finish():
    outcome = sweep.run_sweep({n: n for n in "abcd"}, _always_fails, workers=2, retries=1, show_progress=False)
    assert outcome.results == {"a": "A", "b": "B", "d": "D"}
    assert list(outcome.failed) == ["c"] and "the photos of c do not load" in outcome.failed["c"]
    assert outcome.attempts["c"] == 2  # the first try and one retry


def test_a_table_lists_the_runs_that_did_not_finish(tmp_path):
    row = {"scene": "lego", "protocol": "blender8", "lpips": None, "train_seconds": 1.0, "num_primitives": 10,
           "init_points": 5, "init_method": "mvs", "ssim": 0.8, "prior": "none", "seed": 0, "psnr": 20.0}
    meta = {"machine": "test", "command": "c", "torch": "t", "date": "d", "settings": "",
            "missing": {"lego seed 1": "ValueError: bad photo"}}
    sv.write_tables([row], meta, "t", tmp_path)
    table = (tmp_path / "t.md").read_text()
    assert "| **sparsesplat (this run)** | 20.00 |" in table
    assert "Missing runs" in table and "lego seed 1: ValueError: bad photo" in table


def test_without_ray_or_with_an_address_nobody_answers_the_sweep_says_what_to_do(monkeypatch):
    with pytest.raises(sweep.SweepError, match="no Ray cluster answers at 127.0.0.1:1"):
        sweep.start_ray(1, "127.0.0.1:1", 1, 0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(sweep.SweepError, match=r"pip install -e \"\.\[cluster\]\""):
        sweep.run_sweep({"a": 1}, _always_fails, workers=1)
