"""The stage timer of benchmarks/train_profile.py, and the summation-based finite check of render()."""

from __future__ import annotations

import time

import torch

from sparsesplat.rasterizer.primitives import all_finite
from sparsesplat.rasterizer.profiling import StageTimer, stage


def test_stages_are_charged_their_self_time():
    with StageTimer() as timer:
        with stage("outer"):
            time.sleep(0.05)
            with stage("inner"):
                time.sleep(0.1)
        with stage("inner"):
            time.sleep(0.02)
    assert timer.calls == {"outer": 1, "inner": 2}
    assert 0.115 <= timer.seconds["inner"] < 0.2
    assert 0.045 <= timer.seconds["outer"] < 0.09  # the nested 0.1 s is not counted twice
    assert abs(timer.total() - (timer.seconds["outer"] + timer.seconds["inner"])) < 1e-12


def test_stage_is_a_no_op_without_an_active_timer():
    with StageTimer() as timer:
        pass
    with stage("after"):
        pass
    assert "after" not in timer.seconds


def test_all_finite():
    x = torch.randn(1000, 3)
    assert all_finite(x, None, torch.zeros(0))
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[517, 2] = bad
        assert not all_finite(x, y)
    # finite values whose sum overflows float32: still all finite (the elementwise fallback decides)
    assert all_finite(torch.full((4,), 3e38))
    both = torch.tensor([float("inf"), -float("inf")])  # a sum of NaN, not a cancellation to a finite value
    assert not all_finite(both)
