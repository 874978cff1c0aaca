"""Densification strategies: how the set of primitives grows, shrinks and moves during training.

Every strategy has the same small interface, so the trainer never knows which one runs:

- ``initialize_state(model) -> dict``
- ``step_post_backward(model, state, step, meta)`` after ``loss.backward()`` (sees ``meta.means2d.grad``)
- ``step_post_optimizer(model, state, step)`` after the optimizer step (e.g. MCMC's noise)
- ``regularization(model) -> Tensor | float`` extra loss terms the strategy needs

The two here serve the Gaussian kinds (Gaussians and GES); a kind with a strategy of its own keeps it with its
model in ``recon/kinds/<kind>.py`` (triangles, convexes). A model picks its strategy (``make_strategy``).
"""

from .default import DefaultStrategy
from .mcmc import MCMCStrategy

__all__ = ["DefaultStrategy", "MCMCStrategy"]
