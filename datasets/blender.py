"""NeRF-synthetic (Blender) scenes: ``transforms_{train,test,val}.json`` + RGBA PNGs.

``camera_angle_x`` gives the focal (principal point at the image centre); ``transform_matrix`` is
camera->world with OpenGL/Blender camera axes (x right, y up, z back), converted here to an OpenCV
world->camera viewmat. Views are listed train split, then test, then val, each in file order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .images import image_size
from .scene import SceneListing, ViewRecord

SPLITS = ("train", "test", "val")
# Right-multiplying a camera->world matrix by this flips the camera's y and z axes (OpenGL <-> OpenCV).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; fix or regenerate it"
        ) from None


def _resolve_image(root: Path, file_path: str) -> Path:
    p = (root / file_path).resolve()
    if p.suffix:
        return p
    for suffix in (".png", ".jpg", ".jpeg"):
        if p.with_suffix(suffix).exists():
            return p.with_suffix(suffix)
    return p.with_suffix(".png")


def list_scene(path: Path, downscale=1) -> SceneListing:
    """List the views of a Blender scene folder (pixels are not read)."""
    views: list[ViewRecord] = []
    splits: dict[str, list[int]] = {}
    size: tuple[int, int] | None = None
    for split in SPLITS:
        jpath = path / f"transforms_{split}.json"
        if not jpath.exists():
            continue
        meta = _read_json(jpath)
        try:
            angle = float(meta["camera_angle_x"])
            frames = meta["frames"]
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{jpath} lacks 'camera_angle_x' or 'frames' ({e!r}); is it a NeRF transforms file?") from None
        ids = []
        for k, frame in enumerate(frames):
            try:
                c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
                img_path = _resolve_image(path, frame["file_path"])
            except (KeyError, TypeError, ValueError) as e:
                raise DatasetError(f"{jpath}: frame {k} lacks a valid 'file_path' or 'transform_matrix' ({e!r})") from None
            if c2w.shape != (4, 4):
                raise DatasetError(f"{jpath}: frame {k} transform_matrix has shape {c2w.shape}, expected 4x4")
            if size is None:  # NeRF-synthetic frames share one size; read it once
                size = image_size(img_path)
            w, h = size
            f = 0.5 * w / np.tan(0.5 * angle)
            K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=np.float64)
            ids.append(len(views))
            views.append(ViewRecord(
                name=f"{split}/{img_path.stem}", path=img_path, K=K,
                viewmat=np.linalg.inv(c2w @ GL_TO_CV), width=w, height=h,
            ))
        splits[split] = ids
    if not views:
        raise DatasetError(f"{path} holds no transforms_train.json/transforms_test.json with frames")
    return SceneListing(views=views, source_format="blender", path=path, white_background=True, splits=splits)
