"""The built-in primitive kinds: importing this registers each with ``primitive_model.register_model``.
A new kind adds its import here."""

from .gaussian_model import GaussianModel  # noqa: F401
from .triangle_model import TriangleModel  # noqa: F401
from .convex_model import ConvexModel  # noqa: F401
from .ges_model import GesModel  # noqa: F401
