"""Gaussians (3DGS) and GES, the generalized Gaussians that share their pipeline with one more input.

``primitive.py`` (the types), ``pipeline.py`` (render()'s projection, colours and rasterization),
``torch_stages.py`` (the stages' contract and oracle), ``compiled_stages.py`` (cpu, cuda), ``gsplat_stages.py``,
``gaussian.h`` with ``gaussian_*.cpp`` / ``gaussian_*.cu`` (the kernels; GES's shaped falloff is their
``Shaped`` template argument), ``ply.py`` (the 3DGS layout, GES with a ``beta`` property).
"""

from ...registry import Kind, register
from .pipeline import render_gaussians
from .primitive import Gaussians, GeneralizedGaussians


def _read_gaussians(path):
    from ...splat_formats import read_splats  # the 3DGS PLY, or .spz, .splat, .compressed.ply, .sog by suffix

    return read_splats(path).activated()


def _read_ges(path):
    from .ply import load_gaussians_ply

    g = load_gaussians_ply(path)
    if not isinstance(g, GeneralizedGaussians):
        raise ValueError(f"{path} holds no GES shapes (the vertex property 'beta'): it is a Gaussian scene")
    return g


GAUSSIAN = register(Kind("gaussian", (Gaussians,), render_gaussians, _read_gaussians))
GES = register(Kind("ges", (GeneralizedGaussians,), render_gaussians, _read_ges))

__all__ = ["GAUSSIAN", "GES", "Gaussians", "GeneralizedGaussians"]
