"""The built-in primitive kinds, one folder each (``kinds/README.md`` says what a kind holds and how to add
one). Importing this package registers them (``registry.py``), in this order.
"""

from . import gaussian, triangle, convex  # noqa: F401

__all__ = ["gaussian", "triangle", "convex"]
