"""COLMAP models (``cameras``, ``images``, ``points3D`` as .bin or .txt) read with pycolmap.

Looks for the model in ``sparse/0``, ``sparse`` or the folder itself, and for the images in ``images/``
beside ``sparse/``. Pinhole cameras are used as they are; SIMPLE_RADIAL, RADIAL and OPENCV cameras are
undistorted to a PINHOLE camera with the same K when the pixels are read. Views are sorted by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap

from .errors import DatasetError
from .scene import SceneListing, ViewRecord

# Number of parameters of each COLMAP camera model (for checking text files line by line).
MODEL_PARAMS = {
    "SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8, "OPENCV_FISHEYE": 8,
    "FULL_OPENCV": 12, "FOV": 5, "SIMPLE_RADIAL_FISHEYE": 4, "RADIAL_FISHEYE": 5, "THIN_PRISM_FISHEYE": 12,
}
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


def find_model(path: Path) -> Path | None:
    """The folder holding cameras.bin/.txt: path/sparse/0, path/sparse or path; None if there is none."""
    for d in (path / "sparse" / "0", path / "sparse", path):
        if (d / "cameras.bin").exists() or (d / "cameras.txt").exists():
            return d
    return None


def find_images(path: Path, model: Path) -> Path:
    for d in (path / "images", model.parent / "images", model.parent.parent / "images"):
        if d.is_dir():
            return d
    raise DatasetError(f"COLMAP model {model} found but no images/ folder beside sparse/; put the photos in {path / 'images'}")


def _bad(file: Path, lineno: int, line: str, what: str) -> DatasetError:
    return DatasetError(f"{file}, line {lineno}: {what}: {line.strip()[:120]!r}; fix the line or re-export the model")


def _floats(tokens: list[str]) -> bool:
    try:
        [float(t) for t in tokens]
        return True
    except ValueError:
        return False


def check_text_model(model: Path) -> None:
    """Raise DatasetError naming the file and line of the first malformed line of a text model
    (pycolmap's own messages name neither)."""
    cams = model / "cameras.txt"
    for n, line in enumerate(cams.read_text().splitlines(), 1):
        t = line.split()
        if not t or t[0].startswith("#"):
            continue
        if len(t) < 4 or not t[0].isdigit() or t[1] not in MODEL_PARAMS or not _floats(t[2:]):
            raise _bad(cams, n, line, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        if len(t) - 4 != MODEL_PARAMS[t[1]]:
            raise _bad(cams, n, line, f"{t[1]} takes {MODEL_PARAMS[t[1]]} parameters, got {len(t) - 4}")
    imgs = model / "images.txt"
    lines = imgs.read_text().splitlines()
    n = 0
    while n < len(lines):
        line, n = lines[n], n + 1
        t = line.split()
        if not t or t[0].startswith("#"):
            continue
        if len(t) < 10 or not t[0].isdigit() or not _floats(t[1:8]) or not t[8].isdigit():
            raise _bad(imgs, n, line, "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        if n < len(lines):  # the next line lists the 2D points (X Y POINT3D_ID triples), possibly empty
            pts = lines[n].split()
            if len(pts) % 3 or not _floats(pts):
                raise _bad(imgs, n + 1, lines[n], "expected X Y POINT3D_ID triples (or an empty line)")
            n += 1
    pts3d = model / "points3D.txt"
    if pts3d.exists():
        for n, line in enumerate(pts3d.read_text().splitlines(), 1):
            t = line.split()
            if t and not t[0].startswith("#") and (len(t) < 8 or not _floats(t)):
                raise _bad(pts3d, n, line, "expected POINT3D_ID X Y Z R G B ERROR TRACK[]")


def _intrinsics(model: str, p: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    else:
        fx, fy, cx, cy = p[:4]
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    dist = {
        "SIMPLE_RADIAL": lambda: np.array([p[3], 0, 0, 0]),
        "RADIAL": lambda: np.array([p[3], p[4], 0, 0]),
        "OPENCV": lambda: np.array(p[4:8]),
    }.get(model, lambda: None)()
    if dist is not None and not np.any(dist):
        dist = None
    return K, dist


def list_scene(path: Path, downscale=1) -> SceneListing:
    """List the registered images of a COLMAP model (sorted by name) and its 3D points."""
    model = find_model(path)
    if model is None:
        raise DatasetError(f"no COLMAP model (cameras.bin or cameras.txt) in {path}, {path / 'sparse'} or {path / 'sparse/0'}")
    if (model / "cameras.txt").exists() and not (model / "cameras.bin").exists():
        if not (model / "images.txt").exists():
            raise DatasetError(f"COLMAP model {model} has cameras.txt but no images.txt")
        check_text_model(model)
    try:
        rec = pycolmap.Reconstruction(str(model))
    except Exception as e:  # pycolmap raises ValueError/RuntimeError with its C++ check message
        raise DatasetError(f"pycolmap cannot read the COLMAP model in {model}: {e}") from None
    image_dir = find_images(path, model)
    views = []
    for img in sorted(rec.images.values(), key=lambda im: im.name):
        if not img.has_pose:
            continue
        cam = rec.cameras[img.camera_id]
        name = cam.model.name
        if name not in SUPPORTED:
            raise DatasetError(
                f"{model}: image {img.name} uses a {name} camera; supported models are {', '.join(SUPPORTED)}. "
                f"Run `colmap image_undistorter` and load its output"
            )
        K, dist = _intrinsics(name, np.asarray(cam.params, dtype=np.float64))
        viewmat = np.eye(4)
        pose = img.cam_from_world() if callable(img.cam_from_world) else img.cam_from_world
        viewmat[:3, :4] = np.asarray(pose.matrix(), dtype=np.float64)
        views.append(ViewRecord(
            name=img.name, path=image_dir / img.name, K=K, viewmat=viewmat,
            width=int(cam.width), height=int(cam.height), distortion=dist,
        ))
    if not views:
        raise DatasetError(f"COLMAP model {model} has no registered image")
    points = colors = None
    if rec.num_points3D():
        pts = list(rec.points3D.values())
        points = np.array([p.xyz for p in pts], dtype=np.float32)
        colors = np.array([p.color for p in pts], dtype=np.float32) / 255.0
    return SceneListing(views=views, source_format="colmap", path=path, points=points, point_colors=colors)
