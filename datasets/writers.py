"""Write a ``SyntheticScene`` in every format ``load()`` reads (Blender, LLFF, COLMAP, DTU, photos).

Used by the round-trip tests (write known cameras, load them back) and by ``make_example``. Each writer
takes the scene's OpenCV world->camera viewmats and pixel-centre K and converts to the format's convention.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pycolmap
from PIL import Image

from .blender import GL_TO_CV
from .colmap_text import write_text_model
from .images import write_png
from .photos import EXIF_IFD, FOCAL_35MM
from .synthetic import SyntheticScene


def _np_cams(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray]:
    return scene.cameras.viewmats.double().numpy(), scene.cameras.Ks.double().numpy()


def _centred_focal(scene: SyntheticScene, fmt: str) -> float:
    _, Ks = _np_cams(scene)
    W, H = scene.cameras.width, scene.cameras.height
    f = Ks[0, 0, 0]
    if not (np.allclose(Ks[:, 0, 0], f) and np.allclose(Ks[:, 1, 1], f)
            and np.allclose(Ks[:, 0, 2], W / 2) and np.allclose(Ks[:, 1, 2], H / 2)):
        raise ValueError(f"{fmt} stores one focal and a centred principal point; these cameras differ")
    return float(f)


def write_blender(out: Path, scene: SyntheticScene, splits: dict[str, list[int]] | None = None) -> Path:
    """NeRF-synthetic layout: ``{split}/r_{k}.png`` (RGBA) and ``transforms_{split}.json``."""
    out = Path(out)
    viewmats, _ = _np_cams(scene)
    f = _centred_focal(scene, "Blender")
    angle = 2 * np.arctan(scene.cameras.width / (2 * f))
    rgb = scene.straight_rgb()
    splits = splits or {"train": list(range(len(viewmats)))}
    for split, ids in splits.items():
        frames = []
        for k, i in enumerate(ids):
            write_png(out / split / f"r_{k}.png", np.concatenate([rgb[i], scene.alphas[i]], axis=-1))
            c2w_gl = np.linalg.inv(viewmats[i]) @ GL_TO_CV
            frames.append({"file_path": f"./{split}/r_{k}", "transform_matrix": c2w_gl.tolist()})
        doc = {"camera_angle_x": angle, "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(doc, indent=2))
    return out


def _near_far(scene: SyntheticScene) -> tuple[float, float]:
    z = scene.depths[np.isfinite(scene.depths)]
    return float(z.min() * 0.9), float(z.max() * 1.1)


def write_llff(out: Path, scene: SyntheticScene, factors: tuple[int, ...] = (1,)) -> Path:
    """LLFF layout: ``poses_bounds.npy`` and ``images/`` (factor 1) or ``images_{k}/`` (1/k size)."""
    out = Path(out)
    viewmats, _ = _np_cams(scene)
    f = _centred_focal(scene, "LLFF")
    W, H = scene.cameras.width, scene.cameras.height
    near, far = _near_far(scene)
    rows = []
    for vm in viewmats:
        c2w = np.linalg.inv(vm)
        x, y, z, t = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3]
        pose = np.stack([y, x, -z, t, np.array([H, W, f])], axis=1)  # [down, right, back, t, hwf]
        rows.append(np.concatenate([pose.ravel(), [near, far]]))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "poses_bounds.npy", np.array(rows))
    for k in factors:
        folder = out / ("images" if k == 1 else f"images_{k}")
        size = (int(round(W / k)), int(round(H / k)))
        for i, img in enumerate(scene.images):
            small = cv2.resize(img, size, interpolation=cv2.INTER_AREA) if k != 1 else img
            write_png(folder / f"image{i:03d}.png", small)
    return out


def write_colmap_text(out: Path, scene: SyntheticScene, binary: bool = False) -> Path:
    """COLMAP layout: ``images/*.png`` and ``sparse/0/`` (text, or binary written by pycolmap) with one
    PINHOLE camera per image and the scene's surface points (no tracks)."""
    out = Path(out)
    viewmats, Ks = _np_cams(scene)
    W, H = scene.cameras.width, scene.cameras.height
    names = [f"view_{i:03d}.png" for i in range(len(viewmats))]
    for name, img in zip(names, scene.images):
        write_png(out / "images" / name, img)
    model = out / "sparse" / "0"
    tmp = tempfile.TemporaryDirectory() if binary else None
    text_dir = Path(tmp.name) if tmp else model
    text_dir.mkdir(parents=True, exist_ok=True)
    write_text_model(text_dir, names, W, H, Ks, viewmats, scene.points, scene.point_colors)
    if binary:
        model.mkdir(parents=True, exist_ok=True)
        pycolmap.Reconstruction(str(text_dir)).write_binary(str(model))
        tmp.cleanup()
    return out


def write_colmap_binary(out: Path, scene: SyntheticScene) -> Path:
    """COLMAP layout with a binary model (``cameras.bin`` ...), written through pycolmap."""
    return write_colmap_text(out, scene, binary=True)


def write_dtu(out: Path, scene: SyntheticScene, scale: float = 1.0, center=(0.0, 0.0, 0.0)) -> Path:
    """IDR/NeuS DTU layout: ``image/{i:06d}.png``, ``mask/{i:03d}.png`` (from alpha) and
    ``cameras_sphere.npz`` with world_mat_i = K @ viewmat and scale_mat_i mapping the normalized frame
    to the world (x_world = scale * x_norm + center)."""
    out = Path(out)
    viewmats, Ks = _np_cams(scene)
    S = np.eye(4)
    S[:3, :3] *= scale
    S[:3, 3] = center
    arrays = {}
    for i, (vm, K) in enumerate(zip(viewmats, Ks)):
        K4 = np.eye(4)
        K4[:3, :3] = K
        arrays[f"world_mat_{i}"] = K4 @ vm
        arrays[f"scale_mat_{i}"] = S
        write_png(out / "image" / f"{i:06d}.png", scene.images[i])
        write_png(out / "mask" / f"{i:03d}.png", np.repeat(scene.alphas[i], 3, axis=-1))
    np.savez(out / "cameras_sphere.npz", **arrays)
    return out


def focal35(scene: SyntheticScene) -> int:
    """The EXIF FocalLengthIn35mmFilm (integer mm) closest to the scene's focal."""
    f = _centred_focal(scene, "EXIF")
    return int(round(f * 36.0 / max(scene.cameras.width, scene.cameras.height)))


def write_photos(out: Path, scene: SyntheticScene, suffix: str = ".png", with_exif: bool = True) -> Path:
    """A plain folder of photos, with EXIF FocalLengthIn35mmFilm (see ``focal35``) if ``with_exif``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(scene.images):
        im = Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8))
        kw = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
        if with_exif:
            exif = Image.Exif()
            exif.get_ifd(EXIF_IFD)[FOCAL_35MM] = focal35(scene)
            kw["exif"] = exif.tobytes()
        im.save(out / f"photo_{i:03d}{suffix}", **kw)
    return out
