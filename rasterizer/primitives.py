"""Every primitive type ``render()`` draws, in one place to import them from. Each is defined with the rest of
its kind in ``kinds/<kind>/`` (``kinds/README.md``); what they share is in ``primitive_base.py``.
"""

from .kinds.convex.primitive import Convexes
from .kinds.gaussian.primitive import Gaussians, GeneralizedGaussians
from .kinds.triangle.primitive import Triangles
from .primitive_base import Appearance, all_finite, sanitize

__all__ = ["Appearance", "Convexes", "Gaussians", "GeneralizedGaussians", "Triangles", "all_finite", "sanitize"]
