"""Pieces the quantized formats share: bounded byte reading, float64 arrays of a scene with unit quaternions,
logistic functions and Morton order."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..kinds.gaussian.ply import RawGaussians
from .errors import SplatFormatError

SQRT1_2 = math.sqrt(0.5)
LOGIT_EPS = 1e-6


class ByteReader:
    """Reads fixed-size blocks from a byte string, raising one clear error when the file ends early."""

    def __init__(self, data: bytes, path: Path, what: str = "file"):
        self.data, self.path, self.what, self.pos = data, path, what, 0

    def take(self, nbytes: int, block: str) -> bytes:
        end = self.pos + nbytes
        if end > len(self.data):
            raise SplatFormatError(f"{self.path}: truncated {self.what}: the {block} needs {nbytes} bytes at offset "
                                   f"{self.pos}, but only {len(self.data) - self.pos} remain")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def array(self, dtype, count: int, block: str) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(dt.itemsize * count, block), dtype=dt, count=count)

    def remaining(self) -> int:
        return len(self.data) - self.pos


def as_numpy(raw: RawGaussians) -> dict[str, np.ndarray]:
    """float64 arrays of a scene: means, quats (unit, wxyz), log_scales, opacity_logits, sh (N,K,3)."""
    def f64(t):
        return t.detach().to("cpu").double().numpy()

    q = f64(raw.quats)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return {"means": f64(raw.means), "quats": q, "log_scales": f64(raw.log_scales),
            "opacity_logits": f64(raw.opacity_logits).reshape(-1), "sh": f64(raw.sh)}


def to_raw(means, quats, log_scales, opacity_logits, sh) -> RawGaussians:
    import torch

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return RawGaussians(means=t(means), quats=t(quats), log_scales=t(log_scales),
                        opacity_logits=t(np.asarray(opacity_logits).reshape(-1)), sh=t(sh))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p / (1.0 - p))


def morton_order(points: np.ndarray) -> np.ndarray:
    """Indices sorting (N,3) points along a 3D Morton (Z-order) curve of 10 bits per axis in their bounding box."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.clip(((points - lo) / span * 1023.0).astype(np.int64), 0, 1023)

    def spread(v):
        v = (v | (v << 16)) & 0x030000FF
        v = (v | (v << 8)) & 0x0300F00F
        v = (v | (v << 4)) & 0x030C30C3
        return (v | (v << 2)) & 0x09249249

    code = spread(q[:, 0]) | (spread(q[:, 1]) << 1) | (spread(q[:, 2]) << 2)
    return np.argsort(code, kind="stable")
