"""Image files: listing a folder, reading pixels (EXIF orientation applied), sizes, area resampling.

Images are float32 numpy arrays in [0, 1], channels last: (H, W, 3) or (H, W, 4) with alpha.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_ORIENTATION_TAG = 0x0112


def list_image_files(folder: Path, what: str = "images") -> list[Path]:
    """Sorted JPEG/PNG files in ``folder``; other files are skipped with a warning.

    Raises DatasetError if the folder is missing or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{what} folder {folder} does not exist; check the path")
    files, skipped = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        (files if p.suffix.lower() in IMAGE_SUFFIXES else skipped).append(p)
    if skipped:
        names = ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"{folder}: skipped {len(skipped)} file(s) that are not JPEG/PNG images: {names}",
            stacklevel=2,
        )
    if not files:
        raise DatasetError(
            f"{what} folder {folder} holds no JPEG/PNG image; put the photos there (.jpg, .jpeg, .png)"
        )
    return files


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; check the camera file that lists it") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"cannot read image {path} ({e}); re-export it or remove it") from None


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image as it will be read, i.e. after EXIF orientation, from the header only."""
    with _open(path) as im:
        w, h = im.size
        try:  # PNG keeps EXIF after the pixels, so this can read (and trip over) the whole file
            orientation = im.getexif().get(_ORIENTATION_TAG, 1)
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"image {path} is corrupt or truncated ({e}); re-export it or remove it") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) or (H, W, 4) float32 in [0, 1], EXIF orientation applied, alpha kept."""
    with _open(path) as im:
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"image {path} is corrupt or truncated ({e}); re-export it or remove it") from None
        if im.mode in ("I;16", "I;16B", "I"):
            arr = np.asarray(im, dtype=np.float32) / 65535.0
            return np.repeat(arr[..., None], 3, axis=-1)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    return arr.astype(np.float32) / 255.0


def read_mask(path: Path) -> np.ndarray:
    """(H, W, 1) float32 in [0, 1] from a greyscale/RGB(A) mask image (first channel, or alpha)."""
    arr = read_image(path)
    m = arr[..., 3] if arr.shape[-1] == 4 and np.ptp(arr[..., 3]) > 0 else arr[..., 0]
    return m[..., None]


def resize_area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample (H, W, C) to ``size`` = (W', H') with area interpolation; no-op at the same size."""
    w, h = size
    if img.shape[1] == w and img.shape[0] == h:
        return img
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return out[..., None] if out.ndim == 2 else out


def write_png(path: Path, img: np.ndarray) -> None:
    """Write (H, W, 3|4) float in [0, 1] (or uint8) as an 8-bit PNG."""
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def undistort(img: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Remove lens distortion from (H, W, C): the output is the pinhole image with the same ``K``.

    ``K`` uses pixel centres at j + 0.5 (COLMAP, gsplat); OpenCV puts them at j, hence the half-pixel shift.
    """
    K_cv = np.array(K, dtype=np.float64)
    K_cv[0, 2] -= 0.5
    K_cv[1, 2] -= 0.5
    out = cv2.undistort(img, K_cv, np.asarray(dist, dtype=np.float64), newCameraMatrix=K_cv)
    return out[..., None] if out.ndim == 2 else out
