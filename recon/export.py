"""Run-folder writers: cameras.json, a COLMAP text model, a NeRF transforms.json, side-by-side PNGs.

Cameras leave in the user's frame. ``recon.init`` normalizes the scene with a similarity
``T = [[s R, t], [0, 1]]`` (x_norm = s R x_user + t, world_user -> world_normalized); every writer here takes
that 4x4 as ``transform`` and undoes it (see ``viewmats_to_user``). All files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from sparsesplat.rasterizer import Cameras

from .io import atomic_path, write_json

CONVENTION = (
    "OpenCV camera axes (x right, y down, z forward); viewmat is world->camera, camtoworld its inverse; "
    "K in pixels with pixel (row i, col j) centred at (j + 0.5, i + 0.5)"
)
# Right-multiplying a camera->world matrix by this flips the camera's y and z axes (OpenCV <-> OpenGL).
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def _np64(t) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def similarity_scale(transform) -> float:
    """The scale s of a similarity 4x4 [[s R, t], [0, 1]] (checked to be one: R orthonormal, det > 0)."""
    T = _np64(transform)
    if T.shape != (4, 4) or not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f"transform must be a 4x4 similarity [[sR, t], [0, 1]], got {T.tolist()}")
    det = np.linalg.det(T[:3, :3])
    if not det > 0:
        raise ValueError(f"transform's 3x3 block has determinant {det:g}; expected a similarity with s > 0")
    s = det ** (1.0 / 3.0)
    R = T[:3, :3] / s
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-5):
        raise ValueError("transform is not a similarity (its 3x3 block is not a scaled rotation)")
    return float(s)


def viewmats_to_user(viewmats, transform) -> np.ndarray:
    """(C,4,4) world->camera viewmats of the normalized frame -> rigid viewmats of the user's frame.

    With x_norm = T x_user, the camera coordinates V_n T x_user equal s times the user-frame camera
    coordinates (the camera frame scales with the world), so V_user = diag(1/s, 1/s, 1/s, 1) V_n T:
    rotation R_c R, translation (R_c t + t_c) / s. Points project to the same pixels (projection ignores a
    common scale of camera coordinates) and the camera centre is T^-1 applied to the normalized centre.
    """
    V = _np64(viewmats)
    if transform is None:
        return V.copy()
    T = _np64(transform)
    s = similarity_scale(T)
    return np.diag([1 / s, 1 / s, 1 / s, 1.0]) @ V @ T


def points_to_user(points, transform) -> np.ndarray:
    """(M,3) points of the normalized frame -> the user's frame (x_user = T^-1 x_norm)."""
    P = _np64(points).reshape(-1, 3)
    if transform is None:
        return P.copy()
    T = _np64(transform)
    similarity_scale(T)
    Tinv = np.linalg.inv(T)
    return P @ Tinv[:3, :3].T + Tinv[:3, 3]


def _check_names(names: Sequence[str], cameras: Cameras, what: str) -> list[str]:
    names = [str(n) for n in names]
    if len(names) != len(cameras):
        raise ValueError(f"{what}: {len(names)} names for {len(cameras)} cameras")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: image names must be unique")
    return names


def _camera_entry(cameras: Cameras, i: int, viewmat: np.ndarray) -> dict:
    K = _np64(cameras.Ks[i])
    return {
        "width": cameras.width, "height": cameras.height,
        "fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
        "viewmat": viewmat.tolist(), "camtoworld": np.linalg.inv(viewmat).tolist(),
    }


def write_cameras_json(
    path,
    names: Sequence[str],
    cameras: Cameras,
    refined: Cameras | None = None,
    transform=None,
    focal_is_guess: bool = False,
) -> None:
    """Write ``cameras.json``: the input (and refined) cameras in the user's frame.

    Args:
        path: output file.
        names: one image name per camera.
        cameras: the input cameras, in the normalized frame when ``transform`` is given.
        refined: the cameras after pose refinement (same names and order), or None.
        transform: 4x4 similarity world_user -> world_normalized, or None if the scene was not normalized.
        focal_is_guess: the focal length is a default, not read from the data.

    The JSON holds "convention", "frame" ("user"), "normalization" (the 4x4 or null), "focal_is_guess" and
    "cameras": per camera id, name, width, height, fx, fy, cx, cy, viewmat (world->camera 4x4, OpenCV),
    camtoworld, and "refined" (the same camera keys) when refined cameras are given.
    """
    names = _check_names(names, cameras, "write_cameras_json")
    if refined is not None and len(refined) != len(cameras):
        raise ValueError(f"write_cameras_json: {len(refined)} refined cameras for {len(cameras)} cameras")
    views = viewmats_to_user(cameras.viewmats, transform)
    views_ref = None if refined is None else viewmats_to_user(refined.viewmats, transform)
    entries = []
    for i, name in enumerate(names):
        entry = {"id": i, "name": name, **_camera_entry(cameras, i, views[i])}
        if views_ref is not None:
            entry["refined"] = _camera_entry(refined, i, views_ref[i])
        entries.append(entry)
    doc = {
        "convention": CONVENTION,
        "frame": "user",
        "normalization": None if transform is None else _np64(transform).tolist(),
        "focal_is_guess": bool(focal_is_guess),
        "cameras": entries,
    }
    write_json(doc, Path(path))


def write_colmap_text(folder, names: Sequence[str], cameras: Cameras, points=None, colors=None,
                      transform=None) -> Path:
    """Write ``folder/sparse/0/{cameras,images,points3D}.txt``, a COLMAP text model of the cameras
    (``datasets.colmap_text.write_text_model``): one PINHOLE camera per distinct intrinsics, the images'
    world->camera poses, ``points`` (M,3) with ``colors`` (M,3) in [0, 1] (default grey) as points3D without
    tracks. With ``transform`` (see ``write_cameras_json``) cameras and points are written in the user's frame.
    Returns the model folder.
    """
    from sparsesplat.datasets.colmap_text import write_text_model

    names = _check_names(names, cameras, "write_colmap_text")
    P = None if points is None else points_to_user(points, transform)
    C = None if colors is None else _np64(colors)
    return write_text_model(Path(folder) / "sparse" / "0", names, cameras.width, cameras.height, _np64(cameras.Ks),
                            viewmats_to_user(cameras.viewmats, transform), P, C)


def write_transforms_json(path, names: Sequence[str], cameras: Cameras, transform=None) -> None:
    """Write a NeRF / nerfstudio ``transforms.json``: per frame ``file_path`` (the name, relative to the
    JSON's folder), ``transform_matrix`` (camera->world, OpenGL camera axes: x right, y up, z back) and
    ``fl_x, fl_y, cx, cy, w, h``; top-level ``camera_angle_x`` from the first camera (what the original
    NeRF and Blender loaders read) and ``camera_model`` OPENCV (no distortion). With ``transform`` the
    cameras are written in the user's frame.
    """
    names = _check_names(names, cameras, "write_transforms_json")
    Ks = _np64(cameras.Ks)
    views = viewmats_to_user(cameras.viewmats, transform)
    W, H = cameras.width, cameras.height
    frames = []
    for name, K, V in zip(names, Ks, views):
        frames.append({
            "file_path": name,
            "transform_matrix": (np.linalg.inv(V) @ CV_TO_GL).tolist(),
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": W, "h": H,
        })
    doc = {
        "camera_model": "OPENCV",
        "camera_angle_x": float(2 * np.arctan(W / (2 * Ks[0, 0, 0]))) if len(Ks) else None,
        "w": W, "h": H,
        "frames": frames,
    }
    write_json(doc, Path(path))


def _to_uint8(img, what: str) -> np.ndarray:
    a = _np64(img)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"save_side_by_side: {what} must be (H, W, 3), got {a.shape}")
    return np.clip(np.round(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)


def save_side_by_side(path, render, gt) -> None:
    """Save a PNG with the render on the left and the ground truth on the right (both (H, W, 3) in [0, 1])."""
    left, right = _to_uint8(render, "render"), _to_uint8(gt, "gt")
    if left.shape != right.shape:
        raise ValueError(f"save_side_by_side: render {left.shape} and gt {right.shape} differ in size")
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp, format="PNG")
