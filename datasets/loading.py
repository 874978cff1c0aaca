"""``load()``: detect a scene's format, list its views, pick a protocol's views, read and resize pixels."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras

from . import blender, colmap, dtu, llff, photos
from .errors import DatasetError
from .images import IMAGE_SUFFIXES, read_image, read_mask, resize_area, undistort
from .protocols import split_for
from .scene import SceneData, SceneListing, ViewRecord
from .sizes import Downscale, scale_K, target_size

LISTERS = {
    "blender": blender.list_scene, "llff": llff.list_scene, "dtu": dtu.list_scene,
    "colmap": colmap.list_scene, "photos": photos.list_scene,
}
FORMATS = tuple(LISTERS)


def detect_format(path: Path, protocol: str | None = None) -> str:
    """"blender", "llff", "dtu", "colmap" or "photos" from the files in ``path``.

    A folder with both DTU's ``cameras_sphere.npz`` and LLFF's ``poses_bounds.npy`` (some DTU releases ship
    both) is read as DTU when the protocol is a DTU one (``dtu3``...), so its object masks are used, and as
    LLFF otherwise."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"scene folder {path} does not exist; check the path")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file; pass the scene folder that contains it")
    if any(path.glob("transforms_*.json")):
        return "blender"
    dtu_protocol = protocol is not None and protocol.lower().startswith("dtu")
    if (path / "cameras_sphere.npz").exists() and dtu_protocol:
        return "dtu"
    if (path / "poses_bounds.npy").exists():
        return "llff"
    if (path / "cameras_sphere.npz").exists():
        return "dtu"
    if colmap.find_model(path) is not None:
        return "colmap"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return "photos"
    if not any(path.iterdir()):
        raise DatasetError(f"scene folder {path} is empty; put photos or a dataset (Blender, LLFF, COLMAP, DTU) there")
    raise DatasetError(
        f"cannot tell the format of {path}: expected transforms_*.json (Blender), poses_bounds.npy (LLFF), "
        f"cameras_sphere.npz (DTU), sparse/0 or cameras.bin/.txt (COLMAP), or JPEG/PNG photos"
    )


def load(
    path: str | os.PathLike,
    format: str = "auto",
    protocol: str | None = None,
    downscale: Downscale = 1,
    background: Sequence[float] | torch.Tensor | None = None,
    resize_mixed: bool = False,
) -> SceneData:
    """Load a scene folder in any supported format as one ``SceneData``.

    Args:
        path: the scene folder.
        format: "auto" (detect) or one of "blender", "llff", "colmap", "dtu", "photos".
        protocol: a sparse-view protocol ("llff3", "blender8", "dtu3", "mip360-24", ...) choosing train and
            test views; only those views are read. None: all views, all training.
        downscale: a factor (2 = half size, relative to the full-resolution images) or a (W, H) size.
        background: RGB in [0, 1] that alpha is composited on; default white for Blender, else black.
        resize_mixed: resize images of other sizes to the first image's size instead of raising.

    Returns:
        SceneData with images (N, H, W, 3), cameras, names, train_ids/test_ids indexing those N views.
    """
    path = Path(path)
    fmt = detect_format(path, protocol) if format == "auto" else format
    if fmt not in LISTERS:
        raise ValueError(f"unknown format {format!r}; choose 'auto' or one of {', '.join(FORMATS)}")
    if format != "auto" and not path.is_dir():
        raise DatasetError(f"scene folder {path} does not exist; check the path")
    listing = LISTERS[fmt](path, downscale=downscale)
    if len(listing.views) < 2:
        raise DatasetError(
            f"{path} has {len(listing.views)} image; a scene needs at least 2 views (3 or more recommended)"
        )
    if protocol is None:
        ids = list(range(len(listing.views)))
        train, test = ids, []
    else:
        train, test = split_for(protocol, listing)
        ids = sorted(set(train) | set(test))
    return materialize(listing, ids, train, test, downscale, background, resize_mixed, protocol)


def _check_sizes(views: list[ViewRecord], resize_mixed: bool) -> tuple[int, int]:
    sizes = Counter((v.width, v.height) for v in views)
    if len(sizes) > 1 and not resize_mixed:
        detail = "; ".join(
            f"{w}x{h}: " + ", ".join(v.name for v in views if (v.width, v.height) == (w, h))[:200]
            for (w, h) in sizes
        )
        raise DatasetError(
            f"images have {len(sizes)} different sizes ({detail}); pass resize_mixed=True "
            f"(CLI: --resize-mixed) to resize them all to {views[0].width}x{views[0].height}, or crop them yourself"
        )
    return views[0].width, views[0].height


def _read_view(view: ViewRecord) -> tuple[np.ndarray, np.ndarray | None]:
    img = read_image(view.path)
    if img.shape[:2] != (view.height, view.width):
        raise DatasetError(
            f"image {view.path} is {img.shape[1]}x{img.shape[0]} but its camera says {view.width}x{view.height}; "
            f"use the images the cameras were computed for"
        )
    mask = read_mask(view.mask_path) if view.mask_path is not None else None
    if img.shape[-1] == 4:
        mask = img[..., 3:] if mask is None else mask
        img = img[..., :3]
    if view.distortion is not None:
        img = undistort(img, view.K, view.distortion)
        mask = None if mask is None else undistort(mask, view.K, view.distortion)
    return img, mask


def materialize(
    listing: SceneListing,
    ids: list[int],
    train: list[int],
    test: list[int],
    downscale: Downscale = 1,
    background=None,
    resize_mixed: bool = False,
    protocol: str | None = None,
) -> SceneData:
    """Read, undistort, composite and resize the views ``ids`` of ``listing``; ``train``/``test`` are
    listing indices and come back as indices into the returned views."""
    views = [listing.views[i] for i in ids]
    ref = _check_sizes(views, resize_mixed)
    want = target_size(listing.original_size or ref, downscale)
    if not isinstance(downscale, (tuple, list)) and (want[0] > ref[0] or want[1] > ref[1]):
        warnings.warn(
            f"{listing.path}: no images at {want[0]}x{want[1]} (downscale={downscale}); using the largest "
            f"available, {ref[0]}x{ref[1]}",
            stacklevel=3,
        )
        want = ref
    if background is None:
        background = (1.0, 1.0, 1.0) if listing.white_background else (0.0, 0.0, 0.0)
    bg = torch.as_tensor(background, dtype=torch.float32).reshape(3)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pixels = list(pool.map(_read_view, views))
    has_mask = any(m is not None for _, m in pixels)
    images, masks, Ks = [], [], []
    for view, (img, mask) in zip(views, pixels):
        if mask is None and has_mask:
            mask = np.ones(img.shape[:2] + (1,), np.float32)
        if mask is not None and mask.shape[:2] != img.shape[:2]:
            raise DatasetError(f"mask {view.mask_path} is not the size of image {view.path}")
        img, mask = resize_area(img, want), None if mask is None else resize_area(mask, want)
        if mask is not None and view.mask_path is None:  # alpha: composite on the background
            img = img * mask + bg.numpy() * (1.0 - mask)
        images.append(np.clip(img, 0.0, 1.0))
        masks.append(mask)
        Ks.append(scale_K(view.K, (view.width, view.height), want))

    cameras = Cameras(
        viewmats=torch.as_tensor(np.stack([v.viewmat for v in views]), dtype=torch.float32),
        Ks=torch.as_tensor(np.stack(Ks), dtype=torch.float32),
        width=want[0], height=want[1],
    )
    pos = {g: k for k, g in enumerate(ids)}
    return SceneData(
        images=torch.from_numpy(np.stack(images).astype(np.float32)),
        masks=torch.from_numpy(np.stack(masks).astype(np.float32)) if has_mask else None,
        cameras=cameras,
        names=[v.name for v in views],
        near=listing.near, far=listing.far,
        background=bg, white_background=bool(torch.all(bg == 1.0)),
        train_ids=[pos[i] for i in train], test_ids=[pos[i] for i in test],
        points=listing.points, point_colors=listing.point_colors,
        focal_is_guess=listing.focal_is_guess, poses_known=listing.poses_known,
        source_format=listing.source_format, source_ids=list(ids), protocol=protocol, path=listing.path,
        source_count=len(listing.views),
        loss_masks=listing.source_format == "photos" and any(v.mask_path is not None for v in views),
    )
