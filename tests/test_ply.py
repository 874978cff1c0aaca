"""3DGS PLY layout: exact round trips, the property order other viewers expect, raw activations, and files
built by hand in the layout the original 3DGS code writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from sparsesplat.rasterizer import Gaussians
from sparsesplat.rasterizer.kinds.gaussian.ply import (
    load_gaussians_ply,
    load_gaussians_ply_raw,
    save_gaussians_ply,
    save_gaussians_ply_raw,
)
from sparsesplat.rasterizer.ply import PlyFormatError, save_points_ply


def random_gaussians(n: int, k: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.exp(torch.empty(n, 3).uniform_(-6, 2, generator=g)),
        opacities=torch.empty(n).uniform_(0.01, 0.99, generator=g),
        sh=torch.randn(n, k, 3, generator=g),
    )


def expected_names(k: int) -> list[str]:
    rest = [f"f_rest_{i}" for i in range(3 * (k - 1))]
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + rest
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@pytest.mark.parametrize("k", [1, 4, 9, 16])
def test_round_trip_is_exact(tmp_path, k):
    g = random_gaussians(50, k, seed=k)
    path = tmp_path / "scene.ply"
    save_gaussians_ply(path, g)
    back = load_gaussians_ply(path)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        torch.testing.assert_close(getattr(back, name), getattr(g, name), rtol=1e-6, atol=0, msg=name)
    assert back.sh.shape == (50, k, 3) and back.means.dtype == torch.float32


def test_layout_seen_by_plyfile(tmp_path):
    g = random_gaussians(7, 16)
    path = tmp_path / "scene.ply"
    save_gaussians_ply(path, g)
    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    assert [el.name for el in ply.elements] == ["vertex"]
    v = ply["vertex"]
    assert [p.name for p in v.properties] == expected_names(16)
    assert all(v.data.dtype[p.name] == np.dtype("<f4") for p in v.properties)
    assert v.count == 7
    # f_rest is channel-major: all 15 rest coefficients of R, then G, then B
    sh = g.sh.numpy()
    np.testing.assert_allclose(v["f_rest_0"], sh[:, 1, 0], rtol=1e-7)
    np.testing.assert_allclose(v["f_rest_14"], sh[:, 15, 0], rtol=1e-7)
    np.testing.assert_allclose(v["f_rest_15"], sh[:, 1, 1], rtol=1e-7)
    np.testing.assert_allclose(v["f_rest_44"], sh[:, 15, 2], rtol=1e-7)
    np.testing.assert_allclose(v["f_dc_1"], sh[:, 0, 1], rtol=1e-7)
    assert np.all(v["nx"] == 0) and np.all(v["nz"] == 0)
    assert not path.with_name(".scene.ply.tmp").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["scene.ply"]  # no temporary file left behind


def test_values_are_stored_raw(tmp_path):
    g = Gaussians(
        means=torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        quats=torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),
        scales=torch.tensor([[1.0, np.e, 0.5], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]),
        opacities=torch.tensor([0.5, 1.0, 0.0]),
        sh=torch.zeros(3, 1, 3),
    )
    path = tmp_path / "raw.ply"
    save_gaussians_ply(path, g)
    v = PlyData.read(str(path))["vertex"]
    assert v["opacity"][0] == 0.0  # logit(0.5)
    np.testing.assert_allclose([v["scale_0"][0], v["scale_1"][0], v["scale_2"][0]], [0, 1, np.log(0.5)], atol=1e-6)
    np.testing.assert_array_equal([v["rot_0"][0], v["rot_1"][1]], [2.0, 1.0])  # wxyz, not normalized
    np.testing.assert_array_equal([v["x"][0], v["y"][0], v["z"][0]], [1, 2, 3])
    # opacities 1 and 0 and a zero scale are clamped to finite raw values
    np.testing.assert_allclose(v["opacity"][1:], [np.log((1 - 1e-6) / 1e-6), np.log(1e-6 / (1 - 1e-6))], rtol=1e-5)
    assert np.isfinite(v["scale_0"][2])
    back = load_gaussians_ply(path)
    np.testing.assert_allclose(back.opacities.numpy(), [0.5, 1 - 1e-6, 1e-6], rtol=1e-5)


def test_colors_are_stored_as_degree0_sh(tmp_path):
    colors = torch.tensor([[0.5, 0.0, 1.0]])
    g = Gaussians(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.ones(1, 3), torch.ones(1) * 0.3,
                  colors=colors)
    save_gaussians_ply(tmp_path / "c.ply", g)
    v = PlyData.read(str(tmp_path / "c.ply"))["vertex"]
    c0 = 0.28209479177387814
    np.testing.assert_allclose([v["f_dc_0"][0], v["f_dc_1"][0], v["f_dc_2"][0]], [0.0, -0.5 / c0, 0.5 / c0], atol=1e-6)
    assert "f_rest_0" not in [p.name for p in v.properties]


def _write_3dgs_style(path, n, k, rng, dtype="f4", extra=(), text=False):
    """A PLY as graphdeco's GaussianModel.save_ply lays it out, built with plyfile."""
    names = expected_names(k) + list(extra)
    arr = np.zeros(n, dtype=[(name, dtype) for name in names])
    vals = {name: rng.normal(size=n).astype(dtype) for name in names}
    for name in names:
        arr[name] = vals[name]
    PlyData([PlyElement.describe(arr, "vertex")], text=text).write(str(path))
    return vals


@pytest.mark.parametrize("k,dtype,text", [(16, "f4", False), (4, "f8", False), (1, "f4", True)])
def test_loads_a_hand_built_3dgs_file(tmp_path, k, dtype, text):
    rng = np.random.default_rng(k)
    path = tmp_path / "point_cloud.ply"
    vals = _write_3dgs_style(path, 5, k, rng, dtype=dtype, extra=("some_extra",), text=text)
    g = load_gaussians_ply(path)
    f32 = lambda name: vals[name].astype(np.float32)  # noqa: E731
    np.testing.assert_allclose(g.means[:, 1].numpy(), f32("y"), rtol=1e-6)
    np.testing.assert_allclose(g.quats[:, 0].numpy(), f32("rot_0"), rtol=1e-6)
    np.testing.assert_allclose(g.quats[:, 3].numpy(), f32("rot_3"), rtol=1e-6)
    np.testing.assert_allclose(g.scales[:, 2].numpy(), np.exp(f32("scale_2")), rtol=1e-6)
    np.testing.assert_allclose(g.opacities.numpy(), 1 / (1 + np.exp(-f32("opacity"))), rtol=1e-6)
    # 3DGS load_ply: f_rest reshaped to (N, 3, K-1) then transposed, so sh[:, 1 + j, c] = f_rest_{c*(K-1) + j}
    assert g.sh.shape == (5, k, 3)
    np.testing.assert_allclose(g.sh[:, 0, 2].numpy(), f32("f_dc_2"), rtol=1e-6)
    for c in range(3):
        for j in range(k - 1):
            np.testing.assert_allclose(g.sh[:, 1 + j, c].numpy(), f32(f"f_rest_{c * (k - 1) + j}"), rtol=1e-6)


def test_raw_save_and_load(tmp_path):
    rng = torch.Generator().manual_seed(3)
    means, quats = torch.randn(9, 3, generator=rng), torch.randn(9, 4, generator=rng)
    log_scales, logits = torch.randn(9, 3, generator=rng), torch.randn(9, generator=rng)
    sh = torch.randn(9, 9, 3, generator=rng, requires_grad=True)
    save_gaussians_ply_raw(tmp_path / "r.ply", means, quats, log_scales, logits, sh)
    raw = load_gaussians_ply_raw(tmp_path / "r.ply")
    torch.testing.assert_close(raw.log_scales, log_scales, rtol=0, atol=0)
    torch.testing.assert_close(raw.opacity_logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(raw.sh, sh.detach(), rtol=0, atol=0)
    torch.testing.assert_close(raw.quats, quats, rtol=0, atol=0)


def test_not_a_gaussian_ply_names_the_file(tmp_path):
    pts = tmp_path / "points.ply"
    save_points_ply(pts, np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(PlyFormatError, match=r"points\.ply.*lacks f_dc_0.*opacity"):
        load_gaussians_ply(pts)
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"hello world\n")
    with pytest.raises(PlyFormatError, match="junk.ply"):
        load_gaussians_ply(junk)
    odd = tmp_path / "odd.ply"
    _write_3dgs_style(odd, 2, 1, np.random.default_rng(0), extra=("f_rest_0", "f_rest_1"))
    with pytest.raises(PlyFormatError, match=r"odd\.ply: 2 f_rest"):
        load_gaussians_ply(odd)
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        load_gaussians_ply(tmp_path / "missing.ply")


def test_points_ply(tmp_path):
    pts = np.array([[0.0, 1.0, 2.0], [-1.5, 3.25, 1e3]])
    cols = np.array([[0.0, 0.5, 1.0], [1.2, -0.1, 0.2]])
    save_points_ply(tmp_path / "sub" / "p.ply", torch.as_tensor(pts), cols)
    v = PlyData.read(str(tmp_path / "sub" / "p.ply"))["vertex"]
    assert [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue"]
    assert v.data.dtype["red"] == np.uint8 and v.data.dtype["x"] == np.float32
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), pts.astype(np.float32))
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), [[0, 128, 255], [255, 0, 51]])
