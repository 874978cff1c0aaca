"""The primitive kinds on the training side, one module each: the trainable model (raw parameters, their
learning rates and settings, initialization from points, export), and, where the kind has its own, its
densification strategy (the Gaussian kinds share ``recon/strategies``). Each registers its model under its
kind's name (``primitive_model.register_model``), the name the rasterizer's registry knows it by
(``rasterizer/registry.py``); importing this package registers the built-in ones. ``rasterizer/kinds/README.md``
says how to add a kind.
"""

from ..primitive_model import MODELS, PrimitiveModel
from . import gaussian, ges, triangle, convex  # noqa: F401  (registers the built-in kinds)


def model_class(kind: str) -> type[PrimitiveModel]:
    """The model class for a ``--primitive`` name, with an error listing the known kinds."""
    if kind not in MODELS:
        raise ValueError(f"unknown primitive {kind!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[kind]


__all__ = ["gaussian", "ges", "triangle", "convex", "model_class"]
