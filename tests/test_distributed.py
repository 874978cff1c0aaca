"""Data-parallel training on torch.distributed (gloo, CPU): two processes reach the parameters of one process
with the same views per step (densification, dropout, random backgrounds and binocular shifts included), a
resumed two-process run too, and the bad cases say what happened."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.recon import distributed
from sparsesplat.recon.kinds.gaussian import GaussianModel
from sparsesplat.recon.init import normalize_scene
from sparsesplat.recon.strategies import DefaultStrategy
from sparsesplat.recon.trainer import Trainer, TrainConfig

REPO = Path(__file__).resolve().parents[1]
STEPS = 24


@pytest.fixture(scope="module")
def scene():
    return make_scene(n_views=6, width=48, height=36, kind="forward", n_points=600, supersample=1)


def _config() -> TrainConfig:
    # densifies every 4 steps from step 4, with a low threshold so that it clones and splits (global random
    # numbers), random backgrounds, dropout and binocular shifts (the per-view streams) all in play
    return TrainConfig(iters=STEPS, views_per_step=2, random_background="on", dropout=0.2,
                       binocular_start=0.25, sh_every=8, checkpoint_every=0,
                       default=DefaultStrategy(refine_start_iter=3, refine_stop_iter=20, refine_every=4,
                                               reset_every=100_000, grow_grad2d=1e-6))


def _trainer(scene) -> Trainer:
    torch.manual_seed(0)
    cfg = _config()
    cams = scene.cameras.to(dtype=torch.float32)
    train = [0, 1, 2, 3, 4]
    norm = normalize_scene(cams[train], scene.points)
    model = GaussianModel.from_points(norm.apply_points(scene.points), scene.point_colors, 1, cfg.lrs,
                                      norm.scene_scale)
    return Trainer(model, torch.from_numpy(scene.images)[train], norm.apply_cameras(cams)[train], torch.zeros(3), cfg)


def _two_processes(trainer: Trainer) -> Trainer:
    with distributed.launch(2, distributed.follow) as dp:
        distributed.share(dp, trainer)
        trainer.train()
    return trainer


def _same_params(a: Trainer, b: Trainer) -> None:
    assert len(a.model) == len(b.model)
    for k, p in a.model.params.items():
        torch.testing.assert_close(p, b.model.params[k], rtol=1e-4, atol=2e-5, msg=k)  # float32 sums


def test_two_processes_reach_the_parameters_of_one_with_the_same_views_per_step(scene):
    one = _trainer(scene)
    n0 = len(one.model)
    one.train()
    two = _two_processes(_trainer(scene))
    assert two.step == one.step == STEPS
    assert len(one.model) != n0  # densification happened, and both processes took the same decisions
    _same_params(one, two)


def test_a_resumed_two_process_run_matches_the_uninterrupted_one(scene):
    one = _trainer(scene)
    one.train()
    first = _trainer(scene)
    halfway = STEPS // 2
    # interrupted halfway (rank 0 and its follower stop at the same step), then resumed from rank 0's state
    with distributed.launch(2, _follow_until, halfway) as dp:
        distributed.share(dp, first)
        first.train(should_stop=lambda: first.step >= halfway)
    state = first.state_dict()
    resumed = _trainer(scene)
    resumed.load_state_dict(state)
    assert resumed.step == halfway
    _two_processes(resumed)
    assert resumed.step == STEPS
    _same_params(one, resumed)


def _follow_until(dp, stop_at: int) -> None:
    """A follower that, like its rank 0, stops after ``stop_at`` steps (an interrupted run)."""
    original = Trainer.train

    def until(self, on_step=None, on_checkpoint=None, should_stop=lambda: False):
        return original(self, on_step, on_checkpoint, lambda: self.step >= stop_at)

    Trainer.train = until
    distributed.follow(dp)


def _dies(dp) -> None:
    os._exit(3)  # as a process killed for memory would


def test_a_process_that_dies_ends_the_run_with_a_message_naming_it(monkeypatch):
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(distributed.DistributedError, match="process 1 of 2"):
        with distributed.launch(2, _dies) as dp:
            dp.sum_scalars([1.0])
    # The port it picked is not left behind for a later launch (or a child process) to inherit.
    assert "MASTER_PORT" not in os.environ


def test_a_port_in_use_is_refused_with_what_to_do(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        monkeypatch.setenv("MASTER_PORT", str(s.getsockname()[1]))
        with pytest.raises(distributed.DistributedError, match="is in use"):
            with distributed.launch(2, _dies):
                pass


def _cli(out: Path, *extra: str, launcher: tuple = (sys.executable,)) -> subprocess.CompletedProcess:
    cmd = [*launcher, "-m", "sparsesplat.recon.cli", "reconstruct", str(REPO / "examples" / "synthetic_forward"),
           "--protocol", "llff6", "-o", str(out), "--iters", "8", "--init", "random", "--overwrite", *extra]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2")


@pytest.mark.parametrize("launch", ["--nproc 2", "torchrun"])
def test_the_cli_data_parallel_writes_the_run_of_one_process_with_two_views_per_step(tmp_path, launch):
    from plyfile import PlyData

    two = (_cli(tmp_path / "two", "--nproc", "2") if launch == "--nproc 2"
           else _cli(tmp_path / "two", launcher=TORCHRUN))
    assert two.returncode == 0, two.stderr[-2000:]
    assert "data-parallel: 2 processes, 2 views per step" in two.stdout + two.stderr
    one = _cli(tmp_path / "one", "--views-per-step", "2")
    assert one.returncode == 0, one.stderr[-2000:]
    a = PlyData.read(str(tmp_path / "one" / "scene.ply"))["vertex"].data
    b = PlyData.read(str(tmp_path / "two" / "scene.ply"))["vertex"].data
    assert len(a) == len(b)
    for name in a.dtype.names:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("extra, message", [
    (("--nproc", "2", "--views-per-step", "3"), "does not split evenly over 2 processes"),
    (("--nproc", "2", "--fields", "2"), "--fields 2 does not run data-parallel yet"),
])
def test_what_data_parallel_does_not_cover_is_a_clear_error(tmp_path, extra, message):
    done = _cli(tmp_path / "run", *extra)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
