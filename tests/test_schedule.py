"""The training schedule a user gets: fast on a CPU, the papers' on a GPU or with --full; --iters wins."""

from pathlib import Path

import pytest

from sparsesplat.recon.pipeline import ReconstructConfig, apply_schedule, resolve_schedule
from sparsesplat.recon.trainer import TrainConfig


def _cfg(**kw) -> ReconstructConfig:
    return ReconstructConfig(data=Path("scene"), out=Path("run"), device="cpu", **kw)


def test_cpu_default_is_fast_and_full_follows_the_protocol():
    cfg = _cfg(protocol="dtu3")
    assert resolve_schedule(cfg) == "fast"
    line = apply_schedule(cfg)
    assert line.startswith("schedule: fast (the CPU default), 3000 steps") and "--full" in line
    assert cfg.train.iters == 3000 and cfg.train.default.refine_stop_iter == TrainConfig().default.refine_stop_iter
    for protocol, iters in (("dtu3", 10_000), ("llff3", 10_000), ("blender8", 30_000), (None, 30_000)):
        cfg = _cfg(protocol=protocol, full=True)
        assert apply_schedule(cfg).startswith(f"schedule: full (--full), {iters} steps")
        assert cfg.train.default.refine_stop_iter == iters // 2 and cfg.train.mcmc.refine_stop_iter == int(iters * 0.8)
        # every kind's densification follows the long schedule (convexes once stopped at the fast 2000 steps)
        assert cfg.train.convex.strategy.refine_stop_iter == iters // 2
        assert cfg.train.triangle.strategy.refine_stop_iter == int(iters * 0.8)
        assert cfg.train.default.reset_every == 3000 and cfg.train.sh_every == 1000
    assert resolve_schedule(_cfg(schedule="full")) == "full"


def test_explicit_settings_win_over_the_full_schedule_and_applying_twice_changes_nothing():
    cfg = _cfg(protocol="llff3", schedule="full", train=TrainConfig(iters=500))
    cfg.train.default.refine_every = 50
    apply_schedule(cfg)
    assert cfg.train.iters == 500 and cfg.train.default.refine_stop_iter == 250 and cfg.train.default.refine_every == 50
    before = repr(cfg)
    apply_schedule(cfg)
    assert repr(cfg) == before


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_default_is_full():
    assert resolve_schedule(ReconstructConfig(data=Path("s"), out=Path("r"), device="auto")) == "full"


def test_every_densification_strategy_in_the_settings_says_its_full_schedule():
    """A strategy (anything with step_post_backward) anywhere in the settings tree has a full_schedule, so --full
    cannot leave a kind at the fast schedule's refinement window."""
    import dataclasses

    def strategies(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                if hasattr(value, "step_post_backward"):
                    yield prefix + f.name, value
                yield from strategies(value, prefix + f.name + ".")

    found = dict(strategies(TrainConfig()))
    assert set(found) == {"default", "mcmc", "triangle.strategy", "convex.strategy"}
    cfg = _cfg(protocol="llff3", full=True)
    apply_schedule(cfg)
    for name, strategy in strategies(cfg.train):
        assert hasattr(strategy, "full_schedule"), name
        assert strategy.refine_stop_iter >= 5000, name  # the 10k-step window, not the 3000-step one
