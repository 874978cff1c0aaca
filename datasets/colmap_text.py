"""Writing a COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``): what a reconstruction exports
for other tools and what the synthetic test scenes are written as. Reading is ``colmap.py``'s (pycolmap)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from sparsesplat.rasterizer.fileio import atomic_path


def _num(*values) -> str:
    return " ".join(repr(float(v)) for v in values)


def write_text_model(model, names: Sequence[str], width: int, height: int, Ks: np.ndarray, viewmats: np.ndarray,
                     points: Optional[np.ndarray] = None, colors: Optional[np.ndarray] = None) -> Path:
    """Write ``model/{cameras,images,points3D}.txt`` atomically; returns ``model``.

    One PINHOLE camera per distinct (fx, fy, cx, cy); COLMAP's pixel convention (centre of the top-left pixel at
    (0.5, 0.5)) is ours, so K (N,3,3) is written as it is. Images carry the world->camera rotation of
    ``viewmats`` (N,4,4) as qw qx qy qz and its translation, and no 2D points. ``points`` (M,3) and ``colors``
    (M,3) in [0, 1] (default grey) become points3D without tracks."""
    model = Path(model)
    cam_ids: dict[tuple, int] = {}
    cam_lines = ["# Camera list with one line of data per camera:",
                 "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, (name, K, V) in enumerate(zip(names, Ks, viewmats), 1):
        key = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        if key not in cam_ids:
            cam_ids[key] = len(cam_ids) + 1
            cam_lines.append(f"{cam_ids[key]} PINHOLE {width} {height} {_num(*key)}")
        qx, qy, qz, qw = Rotation.from_matrix(V[:3, :3]).as_quat()
        img_lines += [f"{i} {_num(qw, qx, qy, qz, *V[:3, 3])} {cam_ids[key]} {name}", ""]
    pt_lines = ["# 3D point list with one line of data per point:",
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    if points is not None:
        P = np.asarray(points, np.float64).reshape(-1, 3)
        C = np.full_like(P, 0.5) if colors is None else np.asarray(colors, np.float64).reshape(-1, 3)
        if len(C) != len(P):
            raise ValueError(f"write_text_model: {len(C)} colors for {len(P)} points")
        rgb = np.clip(np.round(C * 255), 0, 255).astype(int)
        pt_lines += [f"{k} {_num(*p)} {c[0]} {c[1]} {c[2]} 0" for k, (p, c) in enumerate(zip(P, rgb), 1)]
    for fname, lines in (("cameras.txt", cam_lines), ("images.txt", img_lines), ("points3D.txt", pt_lines)):
        with atomic_path(model / fname) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    return model
