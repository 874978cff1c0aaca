"""The "dense" initializer (``--init dense``): sparse points plus rectified-stereo points.

Registered in ``recon.init`` under the name "dense". The sparse points bound each stereo pair's disparity
search and stay in the cloud: SfM points when the scene has them and no views are held out (they were made
from the training views), else SIFT tracks triangulated across the training views with their cameras.
"""

from __future__ import annotations

import numpy as np

from sparsesplat.datasets import SceneData

from .dense import DenseConfig, dense_points

LAST_STATS: dict = {}  # what the latest call did (for benchmarks and logs)


def dense_initializer(scene: SceneData, train_ids: list[int], seed: int = 0,
                      cfg: DenseConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(points (M, 3), colors (M, 3)) float32 in the scene's frame from the views ``train_ids``."""
    from ..init_points import sparse_points

    ids = list(train_ids)
    sparse, cols = sparse_points(scene, ids)
    if len(ids) < 2 or len(sparse) == 0:
        LAST_STATS.clear()
        LAST_STATS.update(sparse=len(sparse), dense=0)
        return sparse, cols
    from ..init_points import input_masks

    masks = input_masks(scene)  # DTU's object masks are for evaluation only, never for building the scene
    if masks is not None:
        masks = masks[ids].numpy()
    res = dense_points(scene.images[ids].numpy(), scene.cameras[ids], sparse, masks, cfg)
    LAST_STATS.clear()
    LAST_STATS.update(sparse=len(sparse), dense=len(res.points), **res.stats)
    return (np.concatenate([sparse, res.points]).astype(np.float32),
            np.concatenate([cols, res.colors]).astype(np.float32))
