"""Turning a ``downscale`` argument into an image size, and scaling intrinsics to a new size."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

Downscale = Union[int, float, Sequence[int]]


def target_size(size: tuple[int, int], downscale: Downscale) -> tuple[int, int]:
    """(W', H') for an image of ``size`` = (W, H): a factor (2 -> half size) or an explicit (W', H')."""
    if isinstance(downscale, (tuple, list)):
        if len(downscale) != 2 or min(downscale) <= 0:
            raise ValueError(f"downscale as a size must be (width, height) > 0, got {downscale!r}")
        return int(downscale[0]), int(downscale[1])
    f = float(downscale)
    if not f > 0:
        raise ValueError(f"downscale must be a positive factor or a (width, height) size, got {downscale!r}")
    w, h = size
    return max(1, int(round(w / f))), max(1, int(round(h / f)))


def scale_K(K: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """K (3,3) for an image resized from ``src`` (W, H) to ``dst``. With pixel centres at j + 0.5 the
    resize maps u -> u * W'/W exactly, so fx and cx scale alike (no half-pixel shift)."""
    K = np.array(K, dtype=np.float64)
    K[0] *= dst[0] / src[0]
    K[1] *= dst[1] / src[1]
    K[2] = (0.0, 0.0, 1.0)
    return K
