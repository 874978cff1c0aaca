"""PLY files every primitive kind writes through: one binary little-endian element of fixed-size
properties (``write_binary_ply``), coloured point clouds, and the error a reader raises for a bad file.
Each kind's own layout is ``kinds/<kind>/ply.py``.

Part of the rasterizer (the ground floor), so it imports nothing else from sparsesplat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_path


class PlyFormatError(ValueError):
    """A PLY file is unreadable or lacks what a scene of its kind needs."""


def write_binary_ply(path: Path, records: np.ndarray, element: str = "vertex", comment: str | None = None) -> None:
    """Write a structured array (one property per field: float, double, uchar, int or uint) as the one element
    of a binary little-endian PLY, atomically; every kind's scene.ply is written through here."""
    ply_types = {"f4": "float", "f8": "double", "u1": "uchar", "i4": "int", "u4": "uint"}
    header = ["ply", "format binary_little_endian 1.0"] + ([f"comment {comment}"] if comment else [])
    header.append(f"element {element} {len(records)}")
    for name in records.dtype.names:
        header.append(f"property {ply_types[records.dtype[name].str[1:]]} {name}")
    header.append("end_header")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(np.ascontiguousarray(records).tobytes())


def float_records(table: np.ndarray, names: list[str]) -> np.ndarray:
    """The (n, len(names)) columns of ``table`` as little-endian float32 records named ``names``."""
    data = np.ascontiguousarray(table, dtype="<f4")
    return data.view(np.dtype([(name, "<f4") for name in names])).reshape(len(data))


def checked_array(t, n_cols: int | None, name: str, n: int) -> np.ndarray:
    """``t`` (a tensor or array) as a float64 array, which must have shape (n,) or (n, n_cols)."""
    a = t.detach().to("cpu", torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)
    want = (n,) if n_cols is None else (n, n_cols)
    if a.shape != want:
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    return a


def save_points_ply(path, points, colors) -> None:
    """Write a coloured point cloud (x, y, z float; red, green, blue uchar), atomically.

    points: (M,3); colors: (M,3) in [0, 1] (rounded to 8 bits).
    """
    pts = checked_array(points, 3, "points", len(points))
    rgb = checked_array(colors, 3, "colors", len(pts))
    rgb8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertices = np.empty(len(pts), dtype=dtype)
    for i, axis in enumerate("xyz"):
        vertices[axis] = pts[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = rgb8[:, i]
    write_binary_ply(Path(path), vertices)
