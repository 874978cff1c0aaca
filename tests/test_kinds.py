"""The primitive kinds' one registry per layer (rasterizer/registry.py, recon/kinds): both layers know the same
kinds, each trained model renders through its rasterizer kind, and unknown kinds or types are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.rasterizer import primitives, render
from sparsesplat.rasterizer.build import sources
from sparsesplat.rasterizer.registry import KINDS, kind_of, named
from sparsesplat.recon.kinds import model_class
from sparsesplat.recon.primitive_model import MODELS, PrimitiveModel, register_model
from sparsesplat.recon.trainer import TrainConfig

from scenes import orbit_cameras


def test_both_layers_know_the_same_kinds():
    assert set(KINDS) == set(MODELS) == {"gaussian", "ges", "triangle", "convex"}
    for kind in KINDS.values():
        assert kind.read_scene is not None, kind.name
        for t in kind.types:
            assert getattr(primitives, t.__name__) is t  # one place to import every primitive type from


@pytest.mark.parametrize("name", ["gaussian", "ges", "triangle", "convex"])
def test_a_trained_model_renders_through_its_kind(name):
    """A model built from points activates to a type of the rasterizer kind of the same name, which draws it:
    the splats in front of the camera cover pixels, and only there."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3)) * 0.2
    model = model_class(name).create(points, rng.uniform(size=(40, 3)), TrainConfig(), 1.0)
    prims = model.activated()
    assert kind_of(prims) is named(name)
    out = render(prims, orbit_cameras(1, 256, 256), backend="torch")  # convexes start ~1 px soft: not too small
    covered = (out.alphas > 0.01).float().mean()
    assert out.alphas.amax() > 0.5 and 0.01 < covered < 0.5


def test_a_model_of_an_unknown_kind_is_refused():
    class Blob(PrimitiveModel):
        KIND = "blob"

    with pytest.raises(ValueError, match="'blob' is not a primitive kind the rasterizer draws"):
        register_model(Blob)
    assert "blob" not in MODELS
    with pytest.raises(ValueError, match="unknown primitive 'blob'; choose one of convex, gaussian, ges, triangle"):
        model_class("blob")


def test_render_names_what_it_draws_for_an_unknown_type():
    with pytest.raises(TypeError, match="does not support str; it draws Gaussians, GeneralizedGaussians, Triangles"):
        render("not primitives", orbit_cameras(1, 8, 8))


def test_every_kind_kernel_is_compiled_into_both_extensions():
    cpu, cuda = {p.name for p in sources("cpu")}, {p.name for p in sources("cuda")}
    for folder in ("gaussian", "triangle", "convex"):
        for stage in ("projection", "rasterize"):
            assert f"{folder}_{stage}.cpp" in cpu and f"{folder}_{stage}.cu" in cuda
    assert "bindings.cpp" in cpu and "bindings.cpp" in cuda
