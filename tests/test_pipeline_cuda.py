"""`reconstruct` on a CUDA GPU gives what it gives on the CPU: every primitive kind and strategy, with
refinement and the opacity reset inside the run (the steps that mix per-primitive statistics, random
draws and Python scalars with the model's tensors, where a host tensor on a GPU model breaks).
A run resumed on the GPU continues with the strategy statistics its checkpoint (loaded on the CPU) kept.
Skipped without a GPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.datasets.writers import write_colmap_text
from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
from sparsesplat.recon.trainer import TrainConfig

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

KINDS = {  # id -> (primitive, Gaussian strategy)
    "gaussian": ("gaussian", "default"),
    "gaussian_mcmc": ("gaussian", "mcmc"),
    "ges": ("ges", "default"),
    "triangle": ("triangle", "default"),
    "convex": ("convex", "default"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    scene = make_scene(n_views=10, width=64, height=48, kind="forward", n_points=1500, supersample=2)
    return write_colmap_text(tmp_path_factory.mktemp("data") / "scene", scene)


def _run(data, out, kind: str, device: str, iters: int = 300, **kw) -> dict:
    primitive, strategy = KINDS[kind]
    train = TrainConfig(iters=iters, sh_degree=1, sh_every=100, checkpoint_every=150, strategy=strategy)
    d = train.default
    d.refine_start_iter, d.refine_stop_iter, d.refine_every, d.reset_every = 50, 250, 50, 200
    train.mcmc.refine_start_iter, train.mcmc.refine_stop_iter = 50, 250
    tri = train.triangle.strategy
    tri.refine_start_iter, tri.refine_stop_iter, tri.refine_every = 50, 250, 50
    cvx = train.convex.strategy
    cvx.refine_start_iter, cvx.refine_stop_iter, cvx.refine_every, cvx.reset_every = 50, 250, 50, 200
    cfg = ReconstructConfig(data=data, out=out, protocol="llff6", train=train, init="sfm", primitive=primitive,
                            device=device, **kw)
    return reconstruct(cfg, log=lambda *_: None)


@pytest.mark.parametrize("kind", list(KINDS))
def test_cuda_run_matches_the_cpu_run(data, tmp_path, kind):
    cpu = _run(data, tmp_path / "cpu", kind, "cpu")
    gpu = _run(data, tmp_path / "cuda", kind, "cuda")
    saved = json.loads((tmp_path / "cuda" / "metrics.json").read_text())
    assert saved["psnr"] == pytest.approx(gpu["psnr"])
    assert math.isfinite(gpu["psnr"]) and gpu["psnr"] > 15.0, gpu["psnr"]
    # different float summation orders and random draws per device: the same quality, not the same bits
    assert abs(gpu["psnr"] - cpu["psnr"]) < 1.5, (cpu["psnr"], gpu["psnr"])
    assert 0.5 < gpu["num_primitives"] / cpu["num_primitives"] < 2.0, (cpu["num_primitives"], gpu["num_primitives"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_cuda_run_resumes_inside_the_refinement_window(data, tmp_path, kind):
    out = tmp_path / "run"
    _run(data, out, kind, "cuda", iters=150)  # stops inside refinement, its statistics in the checkpoint
    m = _run(data, out, kind, "cuda", iters=300, resume=True)
    assert m["steps"] == 300
    assert math.isfinite(m["psnr"]) and m["psnr"] > 15.0, m["psnr"]
