"""Triangle training: initialization, the Triangle Splatting strategy, training end to end, and the
scene/mesh exports (own PLY layout round trip, meshes read back with plyfile and simple parsers)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.rasterizer import render
from sparsesplat.rasterizer.kinds.triangle.ply import (RawTriangles, TrianglePlyError, load_triangles_ply, mesh_arrays,
                                                save_triangle_mesh, save_triangles_ply)
from sparsesplat.recon.init import normalize_scene
from sparsesplat.recon.metrics import psnr
from sparsesplat.recon.kinds import model_class
from sparsesplat.recon.kinds.triangle import TriangleStrategy, subdivide
from sparsesplat.recon.trainer import Trainer, TrainConfig, load_checkpoint, save_checkpoint
from sparsesplat.recon.kinds.triangle import TriangleModel, TriangleOptions, random_triangles_at


def _area(v):
    return 0.5 * torch.linalg.cross(v[..., 1, :] - v[..., 0, :], v[..., 2, :] - v[..., 0, :], dim=-1).norm(dim=-1)


def test_random_triangles_are_equilateral_and_centred():
    pts = np.random.default_rng(0).normal(size=(50, 3))
    r = np.random.default_rng(1).uniform(0.1, 2.0, 50)
    tri = random_triangles_at(pts, r, seed=3)
    assert np.allclose(tri.mean(1), pts, atol=1e-12)
    assert np.allclose(np.linalg.norm(tri - pts[:, None], axis=-1), r[:, None])
    edges = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1)
    assert np.allclose(edges, np.sqrt(3) * r[:, None])


def test_midpoint_subdivision_tiles_the_parent():
    v = torch.randn(7, 3, 3, dtype=torch.float64)
    middle, corners = subdivide(v)
    parent = _area(v)
    assert torch.allclose(_area(middle), parent / 4) and torch.allclose(_area(corners), parent[:, None] / 4)
    # every child vertex is a parent vertex or an edge midpoint, and the children's centroids average to the parent's
    allc = torch.cat([middle[:, None], corners], 1)  # (7,4,3,3)
    assert torch.allclose(allc.mean((1, 2)), v.mean(1))


def _model(n=40, options=None, seed=0):
    rng = np.random.default_rng(seed)
    return TriangleModel.from_points(rng.normal(size=(n, 3)), rng.uniform(size=(n, 3)), 1,
                                     options or TriangleOptions(), 1.0)


def test_strategy_kills_dead_subdivides_and_respects_the_cap():
    m = _model(40)
    with torch.no_grad():
        m.params["opacities"][:5] = -10.0  # dead
    strat = TriangleStrategy(cap_max=50, grow_rate=0.5, min_weight=0.0, subdivide_size=0.0)
    state = strat.initialize_state(m)
    before = m.params["vertices"].detach().clone()
    counts = strat.refine(m, state)
    assert counts["dead"] == 5
    assert len(m) == 35 + counts["born"] <= 50 and counts["born"] == 15  # 5 sources x 3 corner children
    assert (torch.sigmoid(m.params["opacities"]) > strat.min_opacity).all()
    # the total area is conserved: each source became its middle child plus three corner children
    area_alive = _area(before[5:]).sum()
    assert torch.allclose(_area(m.params["vertices"].detach()).sum(), area_alive, rtol=1e-5)
    for _ in range(5):
        strat.refine(m, strat.initialize_state(m))
    assert len(m) <= 50


def test_strategy_prunes_triangles_that_never_contribute():
    m = _model(20)
    strat = TriangleStrategy(cap_max=20, min_weight=0.01, grow_rate=0.0)
    state = strat.initialize_state(m)
    state["max_weight"] = torch.full((20,), 0.5)
    state["max_weight"][[3, 7]] = 0.001
    state["views"] = 4
    counts = strat.refine(m, state)
    assert counts["dead"] == 2 and len(m) == 18 + counts["born"]


@pytest.fixture(scope="module")
def tiny_scene():
    return make_scene(n_views=7, width=48, height=36, kind="forward", n_points=600, supersample=2)


def _setup(scene, train, cfg):
    cams = scene.cameras.to(dtype=torch.float32)
    norm = normalize_scene(cams[train], scene.points)
    cams_n = norm.apply_cameras(cams)
    model = TriangleModel.create(norm.apply_points(scene.points), scene.point_colors, cfg, norm.scene_scale)
    images = torch.from_numpy(scene.images)
    return Trainer(model, images[train], cams_n[train], torch.zeros(3), cfg), images, cams_n


def _psnr_of(model, images, cams, ids):
    with torch.no_grad():
        out = render(model.activated(), cams[ids], render_mode="RGB")
    return float(psnr(out.colors.clamp(0, 1), images[ids]).mean())


def test_triangle_training_improves_held_out_views_and_resumes(tiny_scene, tmp_path):
    cfg = TrainConfig(iters=240, sh_degree=1, sh_every=100, checkpoint_every=0, dropout=0.1)
    s = cfg.triangle.strategy
    s.refine_start_iter, s.refine_stop_iter, s.refine_every = 60, 200, 60
    train, test = [0, 2, 4, 6], [1, 5]
    assert cfg.triangle is not TrainConfig().triangle
    tr, images, cams = _setup(tiny_scene, train, cfg)
    before = _psnr_of(tr.model, images, cams, test)
    for _ in range(120):
        tr.train_step()
    save_checkpoint(tr, tmp_path / "c.pt")
    tr.train()
    after = _psnr_of(tr.model, images, cams, test)
    assert after > before + 4.0, (before, after)
    assert len(tr.model) > 600  # births outnumbered deaths
    # resume from the checkpoint reproduces the run's shape (the triangle count and parameters' shapes)
    tr2, _, _ = _setup(tiny_scene, train, cfg)
    tr2.load_state_dict(load_checkpoint(tmp_path / "c.pt"))
    assert tr2.step == 120 and isinstance(tr2.model, TriangleModel)


def test_registry_and_wrong_strategy():
    assert model_class("triangle") is TriangleModel
    m = _model(5)
    cfg = TrainConfig(strategy="bogus")
    with pytest.raises(ValueError, match="triangles train with"):
        m.make_strategy(cfg)


# ------------------------------------------------------------------------------------------------ exports


def _raw(n=30, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return RawTriangles(torch.randn(n, 3, 3, generator=g), torch.randn(n, generator=g),
                        torch.randn(n, generator=g), torch.randn(n, K, 3, generator=g))


@pytest.mark.parametrize("K", [1, 4, 16])
def test_triangle_ply_round_trip_is_exact(tmp_path, K):
    raw = _raw(K=K)
    path = save_triangles_ply(tmp_path / "scene.ply", raw)
    back = load_triangles_ply(path)
    for name in ("vertices", "log_sigma", "opacity_logits", "sh"):
        assert torch.equal(getattr(back, name), getattr(raw, name)), name
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    assert "vertex" not in ply and len(ply["triangle"].data) == 30
    assert ply["triangle"]["x1"][4] == pytest.approx(float(raw.vertices[4, 1, 0]))


def test_loading_a_gaussian_ply_as_triangles_is_a_clear_error(tmp_path):
    bad = tmp_path / "g.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    with pytest.raises(TrianglePlyError, match="no 'triangle' element"):
        load_triangles_ply(bad)
    (tmp_path / "junk.ply").write_bytes(b"not a ply")
    with pytest.raises(TrianglePlyError, match="junk.ply"):
        load_triangles_ply(tmp_path / "junk.ply")


def _shared_edge_scene():
    """Two triangles sharing an edge (4 distinct vertices), one transparent, one with a NaN."""
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]],
                      [[1.0, 0, 0], [1, 1, 0], [0, 1, 0]],
                      [[5.0, 5, 5], [6, 5, 5], [5, 6, 5]],
                      [[float("nan"), 0, 0], [1, 0, 0], [0, 1, 0]]])
    sh0 = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    opac = torch.tensor([0.9, 0.8, 0.01, 0.9])
    return v, sh0, opac


def test_mesh_ply_is_deduplicated_with_face_colours(tmp_path):
    from plyfile import PlyData

    pos, faces, rgb = mesh_arrays(*_shared_edge_scene(), min_opacity=0.1)
    path = save_triangle_mesh(tmp_path / "mesh.ply", pos, faces, rgb)
    ply = PlyData.read(str(path))
    verts = np.stack([ply["vertex"][a] for a in "xyz"], 1)
    idx = np.stack(ply["face"]["vertex_indices"])
    assert len(verts) == 4 and idx.shape == (2, 3)
    tri = verts[idx]
    assert {tuple(map(tuple, t)) for t in tri.tolist()} == {((0, 0, 0), (1, 0, 0), (0, 1, 0)), ((1, 0, 0), (1, 1, 0), (0, 1, 0))}
    C0 = 0.28209479177387814
    want = np.round(np.clip(C0 * np.array([[1.0, -1.0, 0.0], [0, 0, 0]]) + 0.5, 0, 1) * 255)
    got = np.stack([ply["face"][c] for c in ("red", "green", "blue")], 1)
    assert np.array_equal(got, want)


def test_mesh_obj_and_glb_read_back(tmp_path):
    pos, faces, rgb = mesh_arrays(*_shared_edge_scene(), min_opacity=0.1)
    obj = save_triangle_mesh(tmp_path / "mesh.obj", pos, faces, rgb)
    lines = obj.read_text().splitlines()
    vs = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    fs = np.array([[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("f ")]) - 1
    assert len(vs) == 4 and fs.shape == (2, 3)
    key = lambda tris: sorted(map(lambda t: t.round(6).tobytes(), tris))  # noqa: E731  (faces grouped by colour)
    assert key(vs[fs].astype(np.float32)) == key(pos[faces])
    mats = (tmp_path / "mesh.mtl").read_text()
    assert mats.count("newmtl") == 2 and "mtllib mesh.mtl" in lines
    glb = save_triangle_mesh(tmp_path / "mesh.glb", pos, faces, rgb).read_bytes()
    magic, version, total = struct.unpack("<4sII", glb[:12])
    assert magic == b"glTF" and version == 2 and total == len(glb)
    jlen, jtype = struct.unpack("<I4s", glb[12:20])
    doc = json.loads(glb[20:20 + jlen])
    assert jtype == b"JSON" and doc["accessors"][0]["count"] == 6
    blen, btype = struct.unpack("<I4s", glb[20 + jlen:28 + jlen])
    binary = glb[28 + jlen:28 + jlen + blen]
    positions = np.frombuffer(binary, "<f4", count=18).reshape(6, 3)
    assert btype == b"BIN\0" and np.allclose(positions, pos[faces].reshape(-1, 3))


def test_model_export_writes_scene_and_meshes_in_the_user_frame(tmp_path):
    from sparsesplat.recon.normalize import Normalization

    m = _model(12)
    norm = Normalization.from_centre_scale([1.0, 2.0, 3.0], 2.0)
    m.export(tmp_path / "scene.ply", norm)
    back = load_triangles_ply(tmp_path / "scene.ply")
    want = m.params["vertices"].detach() * 2.0 + torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(back.vertices, want, atol=1e-5)
    assert torch.equal(back.opacity_logits, m.params["opacities"].detach())
    for suffix in ("ply", "obj", "glb", "mtl"):
        assert (tmp_path / f"scene_mesh.{suffix}").stat().st_size > 0


@pytest.mark.slow
def test_cli_reconstruct_with_triangles(tmp_path):
    """`sparsesplat reconstruct --primitive triangle` end to end: run folder with the triangle scene, meshes,
    metrics, and the help text naming the triangle options."""
    import subprocess
    import sys

    from sparsesplat.datasets.writers import write_colmap_text

    scene = make_scene(n_views=8, width=48, height=36, kind="forward", n_points=500, supersample=2)
    data = write_colmap_text(tmp_path / "scene", scene)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "sparsesplat.recon.cli", "reconstruct", str(data), "-o", str(out),
                        "--primitive", "triangle", "--protocol", "llff3", "--iters", "80", "--sh-degree", "0",
                        "--init", "sfm", "--triangle.strategy.refine-start-iter", "20",
                        "--triangle.strategy.refine-every", "20"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "triangle primitives" in r.stdout
    raw = load_triangles_ply(out / "scene.ply")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_primitives"] == len(raw.vertices) > 0 and metrics["psnr"] > 10
    assert (out / "scene_mesh.ply").is_file() and (out / "scene_mesh.obj").is_file()
