"""The built-in primitive kinds, registered with ``primitive_model.register_model`` as this module imports them
(a new kind adds its import here), and ``model_class``, which finds a kind by its ``--primitive`` name."""

from .gaussian_model import GaussianModel  # noqa: F401
from .triangle_model import TriangleModel  # noqa: F401
from .convex_model import ConvexModel  # noqa: F401
from .ges_model import GesModel  # noqa: F401
from .primitive_model import MODELS, PrimitiveModel


def model_class(kind: str) -> type[PrimitiveModel]:
    """The model class for a ``--primitive`` name, with an error listing the known kinds."""
    if kind not in MODELS:
        raise ValueError(f"unknown primitive {kind!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[kind]
