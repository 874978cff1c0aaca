"""GES (``--primitive ges``) as a user meets it: a reconstruction whose scene.ply keeps the learned shapes
and renders the test views as the run measured them, resume, its PLY layout, and refusals where a Gaussian-only
format cannot hold it."""

from __future__ import annotations

import json

import pytest
import torch
from plyfile import PlyData

from sparsesplat.datasets import load
from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.datasets.writers import write_colmap_text
from sparsesplat.rasterizer import Gaussians, GeneralizedGaussians, render
from sparsesplat.rasterizer.kinds.gaussian.ply import load_gaussians_ply, load_gaussians_ply_raw, save_gaussians_ply
from sparsesplat.rasterizer.scene_io import read_scene_ply
from sparsesplat.rasterizer.splat_formats import SplatFormatError, write_splats
from sparsesplat.recon.export_splats import refuse_kind
from sparsesplat.recon.kinds.ges import SHAPE_MIN, shape_to_raw
from sparsesplat.recon.metrics import psnr
from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
from sparsesplat.recon.trainer import TrainConfig


@pytest.fixture(scope="module")
def colmap_scene(tmp_path_factory):
    scene = make_scene(n_views=10, width=64, height=48, kind="forward", n_points=1500, supersample=2)
    return write_colmap_text(tmp_path_factory.mktemp("data") / "scene", scene)


def _cfg(data, out, iters=200, **kw):
    train = TrainConfig(iters=iters, sh_degree=1, sh_every=100, checkpoint_every=100)
    train.default.refine_start_iter, train.default.refine_stop_iter = 50, 150
    return ReconstructConfig(data=data, out=out, protocol="llff6", train=train, init="sfm", primitive="ges", **kw)


def test_a_ges_run_keeps_its_learned_shapes_and_renders_what_it_measured(colmap_scene, tmp_path):
    out = tmp_path / "run"
    metrics = reconstruct(_cfg(colmap_scene, out), log=lambda *_: None)
    names = [p.name for p in PlyData.read(str(out / "scene.ply"))["vertex"].properties]
    assert names[-1] == "beta" and names[-8:-1] == ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    g = read_scene_ply(out / "scene.ply", "ges")
    assert isinstance(g, GeneralizedGaussians) and len(g) == metrics["num_primitives"]
    assert bool((g.shapes >= SHAPE_MIN).all())
    assert float((g.shapes - 2.0).abs().max()) > 0.05  # the shapes trained, away from the Gaussian start
    user = load(colmap_scene, protocol="llff6")
    with torch.no_grad():
        img = render(g, user.cameras[user.test_ids], render_mode="RGB").colors.clamp(0, 1)
    assert float(psnr(img, user.images[user.test_ids]).mean()) == pytest.approx(metrics["psnr"], abs=0.05)
    assert metrics["psnr"] > 18.0
    # drawn as plain Gaussians (the shapes dropped) the same scene is a different picture
    with torch.no_grad():
        plain = render(Gaussians(g.means, g.quats, g.scales, g.opacities, sh=g.sh), user.cameras[user.test_ids],
                       render_mode="RGB").colors.clamp(0, 1)
    assert float((plain - img).abs().max()) > 0.02
    assert json.loads((out / "metrics.json").read_text())["num_primitives"] == len(g)


def test_a_ges_run_resumes_with_its_shapes(colmap_scene, tmp_path):
    out = tmp_path / "run"
    reconstruct(_cfg(colmap_scene, out, iters=100), log=lambda *_: None)
    logs = []
    m = reconstruct(_cfg(colmap_scene, out, iters=130, resume=True), log=logs.append)
    assert any("resumed from" in str(line) and "step 100" in str(line) for line in logs)
    assert m["steps"] == 130
    assert isinstance(read_scene_ply(out / "scene.ply", "ges"), GeneralizedGaussians)


def test_ges_ply_round_trip_and_the_formats_that_cannot_hold_it(tmp_path):
    n = 20
    gen = torch.Generator().manual_seed(0)
    g = GeneralizedGaussians(torch.randn(n, 3, generator=gen), torch.randn(n, 4, generator=gen),
                             torch.rand(n, 3, generator=gen) + 0.1, torch.rand(n, generator=gen) * 0.9 + 0.05,
                             torch.rand(n, generator=gen) * 4 + 1, sh=torch.randn(n, 4, 3, generator=gen))
    save_gaussians_ply(tmp_path / "g.ply", g)
    back = load_gaussians_ply(tmp_path / "g.ply")
    assert isinstance(back, GeneralizedGaussians)
    assert torch.allclose(back.shapes, g.shapes) and torch.allclose(back.scales, g.scales, rtol=1e-6)
    plain = load_gaussians_ply(tmp_path / "g.ply")
    save_gaussians_ply(tmp_path / "p.ply", Gaussians(plain.means, plain.quats, plain.scales, plain.opacities,
                                                     sh=plain.sh))
    assert type(load_gaussians_ply(tmp_path / "p.ply")) is Gaussians
    with pytest.raises(ValueError, match="no GES shapes"):
        read_scene_ply(tmp_path / "p.ply", "ges")
    raw = load_gaussians_ply_raw(tmp_path / "g.ply")
    with pytest.raises(SplatFormatError, match="shapes"):
        write_splats(tmp_path / "g.spz", raw)
    write_splats(tmp_path / "again.ply", raw)
    assert torch.allclose(load_gaussians_ply(tmp_path / "again.ply").shapes, g.shapes)
    with pytest.raises(SplatFormatError, match="GES"):
        refuse_kind("ges", "--export spz")
    refuse_kind("ges", str(tmp_path / "out.ply"))  # a .ply keeps the shapes: allowed


def test_shape_parametrization_inverts():
    beta = torch.tensor([1.01, 1.5, 2.0, 3.0, 8.0])
    raw = shape_to_raw(beta)
    assert torch.allclose(SHAPE_MIN + torch.nn.functional.softplus(raw), beta, atol=1e-5)
