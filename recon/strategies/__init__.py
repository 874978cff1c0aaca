"""Densification strategies: how the set of primitives grows, shrinks and moves during training.

Every strategy has the same small interface, so the trainer never knows which one runs:

- ``initialize_state(model) -> dict``
- ``step_post_backward(model, state, step, meta)`` after ``loss.backward()`` (sees ``meta.means2d.grad``)
- ``step_post_optimizer(model, state, step)`` after the optimizer step (e.g. MCMC's noise)
- ``regularization(model) -> Tensor | float`` extra loss terms the strategy needs
"""

from .default import DefaultStrategy
from .mcmc import MCMCStrategy
from .triangles import TriangleStrategy

__all__ = ["DefaultStrategy", "MCMCStrategy", "TriangleStrategy"]
