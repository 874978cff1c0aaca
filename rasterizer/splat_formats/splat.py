"""The ``.splat`` format (antimatter15's WebGL viewer, read by SuperSplat and splat-transform): no header,
32 bytes a splat, little-endian::

    float32 x, y, z          position
    float32 sx, sy, sz       standard deviations (linear, not log)
    uint8   r, g, b, a       colour 255 * (0.5 + C0 * f_dc) and 255 * opacity, rounded and clamped
    uint8   qw, qx, qy, qz   unit quaternion as round(128 * q + 128), clamped to 0..255

No spherical harmonics beyond the base colour. Splats are written largest-and-most-opaque first (the order
antimatter15's converter uses, so a viewer streaming the file draws the big picture first).
Quantization: colour and opacity 1/255, rotation components 1/128 before renormalizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from ..kinds.gaussian.ply import RawGaussians
from ..sh import C0
from .codec import as_numpy, logit, sigmoid, to_raw
from .errors import SplatFormatError

RECORD = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def write_splat(path: Path, raw: RawGaussians) -> None:
    a = as_numpy(raw)
    alpha = sigmoid(a["opacity_logits"])
    order = np.argsort(-(np.exp(a["log_scales"].sum(axis=1)) * alpha), kind="stable")
    rec = np.empty(len(order), dtype=RECORD)
    rec["pos"] = a["means"][order]
    rec["scale"] = np.exp(a["log_scales"][order])
    rec["rgba"][:, :3] = _u8((0.5 + C0 * a["sh"][order, 0, :]) * 255.0)
    rec["rgba"][:, 3] = _u8(alpha[order] * 255.0)
    rec["rot"] = _u8(a["quats"][order] * 128.0 + 128.0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(rec.tobytes())


def read_splat(path: Path) -> RawGaussians:
    data = path.read_bytes()
    if len(data) == 0:
        raise SplatFormatError(f"{path}: empty .splat file (no splats)")
    if len(data) % RECORD.itemsize:
        raise SplatFormatError(f"{path}: {len(data)} bytes is not a whole number of 32-byte splats; the file is "
                               "truncated or not a .splat file")
    rec = np.frombuffer(data, dtype=RECORD)
    pos = rec["pos"].astype(np.float64)
    scale = rec["scale"].astype(np.float64)
    if not (np.isfinite(pos).all() and np.isfinite(scale).all()) or (scale < 0).any():
        raise SplatFormatError(f"{path}: positions or scales are not finite non-negative numbers; the file is "
                               "corrupt or not a .splat file")
    q = rec["rot"].astype(np.float64) - 128.0
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    rgba = rec["rgba"].astype(np.float64) / 255.0
    sh = ((rgba[:, :3] - 0.5) / C0)[:, None, :]
    return to_raw(pos, q, np.log(np.maximum(scale, 1e-30)), logit(rgba[:, 3]), sh)
