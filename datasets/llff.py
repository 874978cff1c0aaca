"""LLFF forward-facing scenes: ``poses_bounds.npy`` + ``images/``, ``images_4/``, ``images_8/`` ...

Each row of poses_bounds.npy is 17 numbers: a 3x5 matrix [R | t | hwf] (camera->world, rotation columns in
LLFF's [down, right, back] order; hwf = full-resolution height, width, focal) and the near/far depth
bounds. The images folder closest above the requested size is read; K is scaled from hwf to it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .images import image_size, list_image_files
from .scene import SceneListing, ViewRecord
from .sizes import Downscale, target_size


def read_poses_bounds(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c2w (N,4,4) OpenCV axes, hwf (N,3), bounds (N,2)) from poses_bounds.npy."""
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {file} ({e}); it should be a NumPy .npy array") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
        raise DatasetError(
            f"{file} has shape {arr.shape}; LLFF poses_bounds.npy must be (N, 17): a 3x5 [R|t|hwf] pose "
            f"and near, far per image. Regenerate it with LLFF's imgs2poses.py"
        )
    poses = arr[:, :15].reshape(-1, 3, 5).astype(np.float64)
    down, right, back = poses[:, :, 0], poses[:, :, 1], poses[:, :, 2]
    c2w = np.tile(np.eye(4), (len(arr), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = right, down, -back  # OpenCV x right, y down, z forward
    c2w[:, :3, 3] = poses[:, :, 3]
    return c2w, poses[:, :, 4], arr[:, 15:17].astype(np.float64)


def _image_folders(path: Path) -> list[Path]:
    folders = [p for p in path.iterdir() if p.is_dir() and re.fullmatch(r"images(_\d+)?", p.name)]
    return sorted(folders, key=lambda p: int(p.name[7:] or 1))


def choose_folder(path: Path, full_size: tuple[int, int], downscale: Downscale) -> Path:
    """The images folder with the smallest resolution at least the target size, else the largest."""
    folders = _image_folders(path)
    if not folders:
        raise DatasetError(f"{path} has poses_bounds.npy but no images/ or images_N/ folder beside it")
    want = target_size(full_size, downscale)
    sized = [(image_size(list_image_files(f)[0]), f) for f in folders]
    big_enough = [(s, f) for s, f in sized if s[0] >= want[0] and s[1] >= want[1]]
    pool = big_enough or sized
    pick = min(pool, key=lambda sf: sf[0][0]) if big_enough else max(pool, key=lambda sf: sf[0][0])
    return pick[1]


def list_scene(path: Path, downscale: Downscale = 1) -> SceneListing:
    """List the views of an LLFF scene (sorted image names); pixels are not read."""
    file = path / "poses_bounds.npy"
    c2w, hwf, bounds = read_poses_bounds(file)
    H, W = int(round(hwf[0, 0])), int(round(hwf[0, 1]))
    folder = choose_folder(path, (W, H), downscale)
    files = list_image_files(folder)
    if len(files) != len(c2w):
        raise DatasetError(
            f"{file} has {len(c2w)} poses but {folder} holds {len(files)} images; each image needs one pose"
        )
    w, h = image_size(files[0])
    views = []
    for k, f in enumerate(files):
        fh, fw, focal = hwf[k]
        sx, sy = w / fw, h / fh
        K = np.array([[focal * sx, 0, w / 2], [0, focal * sy, h / 2], [0, 0, 1]], dtype=np.float64)
        views.append(ViewRecord(name=f.name, path=f, K=K, viewmat=np.linalg.inv(c2w[k]), width=w, height=h))
    return SceneListing(
        views=views, source_format="llff", path=path, near=float(bounds[:, 0].min()),
        far=float(bounds[:, 1].max()), original_size=(W, H),
    )
