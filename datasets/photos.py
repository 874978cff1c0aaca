"""A plain folder of photos (JPEG/PNG): no poses, focal length from EXIF when the camera wrote it.

Focal, in order: ``FocalLengthIn35mmFilm`` (f_px = f35 / 36 * max(W, H)); ``FocalLength`` with the
sensor's ``FocalPlaneXResolution``; else 0.9 * max(W, H), flagged as a guess. Poses are identity
placeholders (``SceneData.poses_known = False``) for ``recon.init`` to estimate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .images import image_size, list_image_files
from .scene import SceneListing, ViewRecord

EXIF_IFD = 0x8769
FOCAL_35MM = 0xA405
FOCAL_MM = 0x920A
FOCAL_PLANE_XRES = 0xA20E
FOCAL_PLANE_UNIT = 0xA210
EXIF_WIDTH, EXIF_HEIGHT = 0xA002, 0xA003
UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, micrometre
DEFAULT_FOCAL = 0.9


def exif_focal(path: Path, size: tuple[int, int]) -> float | None:
    """Focal length in pixels for an image of ``size`` (W, H) after orientation, or None."""
    with Image.open(path) as im:  # image_size() has already opened it successfully
        exif = im.getexif().get_ifd(EXIF_IFD)
    long_side = max(size)
    f35 = exif.get(FOCAL_35MM)
    if f35:
        return float(f35) / 36.0 * long_side
    f_mm, xres = exif.get(FOCAL_MM), exif.get(FOCAL_PLANE_XRES)
    if f_mm and xres:
        px_per_mm = float(xres) / UNIT_MM.get(int(exif.get(FOCAL_PLANE_UNIT, 2)), 25.4)
        # The resolution refers to the sensor's full image; the long side survives rotation and resizing.
        full = max(int(exif.get(EXIF_WIDTH, 0) or 0), int(exif.get(EXIF_HEIGHT, 0) or 0)) or long_side
        return float(f_mm) * px_per_mm * long_side / full
    return None


MASK_FOLDER = "masks"


def mask_for(photo: Path, masks: Path) -> Path | None:
    """The mask of ``photo`` in ``masks/``, in any common naming: COLMAP's ``IMG_1.jpg.png``, the same stem
    ``IMG_1.png``, or the same file name. White (or any value > 0.5) keeps a pixel, black leaves it out."""
    for name in (photo.name + ".png", photo.stem + ".png", photo.name):
        if (masks / name).is_file():
            return masks / name
    return None


def list_scene(path: Path, downscale=1) -> SceneListing:
    """List a folder of photos; identity poses, focal from EXIF (or a flagged default). Masks in a ``masks/``
    folder beside the photos (``mask_for``) mark pixels to leave out of training (moving people, cars)."""
    views, guessed = [], False
    masks = Path(path) / MASK_FOLDER
    for f in list_image_files(path, what="photos"):
        w, h = image_size(f)
        focal = exif_focal(f, (w, h))
        if focal is None:
            focal, guessed = DEFAULT_FOCAL * max(w, h), True
        K = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]], dtype=np.float64)
        views.append(ViewRecord(name=f.name, path=f, K=K, viewmat=np.eye(4), width=w, height=h,
                                mask_path=mask_for(f, masks) if masks.is_dir() else None))
    return SceneListing(views=views, source_format="photos", path=path, poses_known=False, focal_is_guess=guessed)
