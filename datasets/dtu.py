"""DTU scenes in the IDR/NeuS layout: ``cameras_sphere.npz``, ``image/`` (or ``images/``), ``mask/``.

For view i, ``P = world_mat_i @ scale_mat_i`` projects the normalized (unit-sphere) frame to pixels; it is
decomposed into K, R and the camera centre, so the cameras live in that normalized frame. K is used as
stored (in pixels of the image on disk). Views are the sorted image names; masks pair by sorted order.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import DatasetError
from .images import image_size, list_image_files
from .scene import SceneListing, ViewRecord


def decompose(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K (3,3) with K[2,2] = 1, world->camera viewmat (4,4)) from a 3x4 projection matrix."""
    K, R, c, *_ = cv2.decomposeProjectionMatrix(np.ascontiguousarray(P[:3, :4], dtype=np.float64))
    K = K / K[2, 2]
    center = (c[:3] / c[3])[:, 0]
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ center
    return K, viewmat


def list_scene(path: Path, downscale=1) -> SceneListing:
    """List the views of a DTU (IDR/NeuS) scene folder; pixels are not read."""
    file = path / "cameras_sphere.npz"
    try:
        cams = np.load(file)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {file} ({e}); it should be an .npz with world_mat_i and scale_mat_i") from None
    image_dir = path / "image" if (path / "image").is_dir() else path / "images"
    files = list_image_files(image_dir)
    masks = list_image_files(path / "mask", what="mask") if (path / "mask").is_dir() else None
    if masks is not None and len(masks) != len(files):
        raise DatasetError(f"{path / 'mask'} holds {len(masks)} masks for {len(files)} images in {image_dir}")
    w, h = image_size(files[0])
    views = []
    for i, f in enumerate(files):
        key = f"world_mat_{i}"
        if key not in cams.files:
            raise DatasetError(f"{file} has no {key} for image {f.name} (image {i} in sorted order)")
        scale = cams[f"scale_mat_{i}"] if f"scale_mat_{i}" in cams.files else np.eye(4)
        P = np.asarray(cams[key], dtype=np.float64) @ np.asarray(scale, dtype=np.float64)
        K, viewmat = decompose(P)
        views.append(ViewRecord(
            name=f.name, path=f, K=K, viewmat=viewmat, width=w, height=h,
            mask_path=None if masks is None else masks[i],
        ))
    return SceneListing(views=views, source_format="dtu", path=path)
