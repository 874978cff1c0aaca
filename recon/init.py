"""Initialization with KNOWN poses: scene normalization and the initial point cloud.

What lives here (``init_points.py`` and ``normalize.py`` hold the parts):
    normalize_scene / Normalization   the similarity to a unit-size, camera-centred frame, and back
    triangulate_matches               SIFT tracks triangulated with the known cameras
    plane_sweep_points                dense points by plane-sweep multi-view stereo (``init_mvs.py``)
    visual_hull_points                object scenes with input masks (alpha): surface of the visual hull
    random_points                     the last resort
    initial_points                    picks a method ("auto", "mvs", "sfm", "hull", "triangulate", "random"
                                      or a registered one) and says what it did
    register_initializer              plug-in point for learned/dense initializers

Points are returned in the scene's (user) frame; the trainer normalizes them with the cameras.
Imports: ``sparsesplat.rasterizer`` and ``sparsesplat.datasets`` types, numpy, torch, OpenCV, scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sparsesplat.datasets import SceneData
from sparsesplat.rasterizer import Cameras

from .init_hull import HullConfig, visual_hull_points
from .init_mvs import MVSConfig, axes_target, plane_sweep_points
from .init_points import (Triangulation, TriangulationConfig, input_masks, random_points,
                          sparse_points, triangulate_matches, triangulate_tracks)
from .normalize import Normalization, normalize_scene

__all__ = [
    "Normalization", "normalize_scene", "triangulate_matches", "triangulate_tracks", "Triangulation",
    "TriangulationConfig", "random_points", "random_bounds", "initial_points", "InitResult",
    "register_initializer", "INITIALIZERS", "visual_hull_points", "HullConfig", "input_masks", "sparse_points", "plane_sweep_points",
    "MVSConfig",
]

MIN_POINTS = 100  # fewer triangulated points than this: fall back to random points
RANDOM_BOX_FRACTION = 0.35  # half side of the random box / camera distance (Blender: 4 -> 1.4; 3DGS: 1.3)

BUILTIN_METHODS = ("auto", "mvs", "sfm", "hull", "triangulate", "random")

# name -> fn(scene, train_ids, seed, **options) -> (points (M,3), colors (M,3)); for learned or dense
# initializers. ``options`` are what the pipeline knows (depth_model, device, cache_dir); take what you need.
Initializer = Callable[..., tuple[np.ndarray, np.ndarray]]
INITIALIZERS: dict[str, Initializer] = {}


def register_initializer(name: str, fn: Initializer) -> None:
    """Make ``initial_points(..., method=name, options=...)`` call ``fn(scene, train_ids, seed, **options)
    -> (points, colors[, note])``; ``fn`` should accept and ignore options it does not use (``**_``). An
    optional third element is a note the log shows after the point count."""
    if name in BUILTIN_METHODS:
        raise ValueError(f"{name!r} is a built-in initialization method; register under another name")
    INITIALIZERS[name] = fn


@dataclass
class InitResult:
    """Initial points (user frame) and how they were made.

    Attributes:
        points: (M, 3) float32; colors: (M, 3) float32 in [0, 1].
        method_used: "sfm", "triangulate", "random" or a registered name.
        message: one line for the user: what was used, how many points, and why (fallbacks included).
        view_depths: "mvs" only: per training view (in ``train_ids`` order), the stereo depth map that passed
            the cross-view checks, (H', W') float32 in user units at the stereo resolution, 0 = unknown; the
            trainer keeps rendered depth close to it (``TrainConfig.stereo_depth_weight``).
    """

    points: np.ndarray
    colors: np.ndarray
    method_used: str
    message: str
    view_depths: list[np.ndarray] | None = None


def random_bounds(cams: Cameras, near: float | None = None, far: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) corners of the box the cameras look at.

    With depth bounds: the bounding box of the cameras' frusta between ``near`` and ``far``. Without: a cube
    around the point closest to all optical axes, of half side RANDOM_BOX_FRACTION x the median camera
    distance to it (an orbit like Blender's gives 3DGS's [-1.3, 1.3]^3 box)."""
    V = cams.viewmats.detach().cpu().double().numpy()
    K = cams.Ks.detach().cpu().double().numpy()
    c2w = np.linalg.inv(V)
    if near is not None and far is not None and 0 < near < far:
        W, H = cams.width, cams.height
        pix = np.array([[0, 0, 1], [W, 0, 1], [0, H, 1], [W, H, 1]], dtype=np.float64)
        corners = []
        for k in range(len(V)):
            rays = pix @ np.linalg.inv(K[k]).T
            for z in (near, far):
                corners.append((rays * z) @ c2w[k, :3, :3].T + c2w[k, :3, 3])
        corners = np.concatenate(corners)
        return corners.min(axis=0), corners.max(axis=0)
    centers = c2w[:, :3, 3]
    target = axes_target(c2w)
    half = RANDOM_BOX_FRACTION * max(float(np.median(np.linalg.norm(centers - target, axis=1))), 1e-6)
    return target - half, target + half


def _random(scene: SceneData, ids: list[int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    lo, hi = random_bounds(scene.cameras[ids], scene.near, scene.far)
    pts, cols = random_points(n, lo, hi, seed)
    box = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi))
    return pts, cols, f"{n} random points in the box {box}"


def initial_points(
    scene: SceneData,
    train_ids: list[int] | None = None,
    method: str = "auto",
    n_random: int = 100_000,
    seed: int = 0,
    max_points: int = 100_000,
    min_points: int = MIN_POINTS,
    options: dict | None = None,
) -> InitResult:
    """Initial point cloud for training on ``train_ids`` (default ``scene.train_ids``).

    "auto" (= "mvs" with the fallbacks below): sparse points (the dataset's SfM points when they exist and no
    views are held out; SfM over all images would leak the test views into a sparse-view run, so then SIFT
    tracks of the training views triangulated with their cameras, as sparse-view papers do), plus dense points
    from plane-sweep multi-view stereo across the training views (``init_mvs``; inside the input masks when
    the photos carry them). When both together give fewer than ``min_points``: the visual hull if the input
    photos carry foreground masks (object scenes), else random points.
    Measured (3 views, DTU scan37): SIFT triangulation alone finds 60 points and training from random points
    collapses; see benchmarks/results/quality.md for the plane-sweep figures.
    "sfm", "hull", "triangulate", "random" force one; any other name calls a registered initializer with
    ``options`` (e.g. ``depth_model`` for "mono-depth").
    """
    ids = list(scene.train_ids if train_ids is None else train_ids)
    if method in INITIALIZERS:
        res = INITIALIZERS[method](scene, ids, seed, **(options or {}))
        pts, cols = res[:2]
        note = f" ({res[2]})" if len(res) > 2 and res[2] else ""
        return InitResult(np.asarray(pts, np.float32), np.asarray(cols, np.float32), method,
                          f"{len(pts)} points from the {method!r} initializer{note}")
    if method not in BUILTIN_METHODS:
        known = ", ".join([*BUILTIN_METHODS, *INITIALIZERS])
        raise ValueError(f"unknown initialization method {method!r}; choose one of: {known}")
    has_sfm = scene.points is not None and len(scene.points) > 0
    if method == "sfm":
        if not has_sfm:
            raise ValueError(f"method='sfm' but the {scene.source_format or 'loaded'} scene has no SfM points; "
                             "use method='triangulate' or 'auto'")
        cols = scene.point_colors if scene.point_colors is not None else np.full_like(scene.points, 0.5)
        note = " (they were built from all images, test views included)" if scene.test_ids else ""
        return InitResult(np.asarray(scene.points, np.float32), np.asarray(cols, np.float32), "sfm",
                          f"{len(scene.points)} SfM points from the dataset{note}")
    if method == "random":
        pts, cols, msg = _random(scene, ids, n_random, seed)
        return InitResult(pts, cols, "random", msg)
    masks = input_masks(scene)
    if method == "hull":
        if masks is None:
            raise ValueError(f"method='hull' needs foreground masks that are part of the input (Blender alpha); "
                             f"the {scene.source_format or 'loaded'} scene has none")
        pts, cols = visual_hull_points(scene.images[ids].numpy(), masks[ids].numpy(), scene.cameras[ids],
                                       max_points=max_points, seed=seed)
        return InitResult(pts, cols, "hull",
                          f"{len(pts)} points on the visual hull of the foreground masks of {len(ids)} views")
    if len(ids) < 2:
        why = f"{'triangulation' if method == 'triangulate' else 'stereo'} needs 2 views, got {len(ids)}"
    elif method == "triangulate":
        pts, cols = triangulate_matches(scene, ids, max_points)
        if len(pts) >= min_points:
            return InitResult(pts, cols, "triangulate",
                              f"{len(pts)} points triangulated from SIFT matches across {len(ids)} views")
        why = f"triangulation found only {len(pts)} points (< {min_points}) in {len(ids)} views"
    else:  # auto, mvs
        pts, cols, used, msg, depths = _sparse_plus_mvs(scene, ids, has_sfm and not scene.test_ids, masks,
                                                        max_points)
        if len(pts) >= min_points:
            return InitResult(pts, cols, used, msg, depths if used == "mvs" else None)
        why = f"{msg}: only {len(pts)} points (< {min_points})"
    if masks is not None and len(ids) >= 2:
        pts, cols = visual_hull_points(scene.images[ids].numpy(), masks[ids].numpy(), scene.cameras[ids],
                                       max_points=max_points, seed=seed)
        return InitResult(pts, cols, "hull", f"{why}; using {len(pts)} points on the visual hull of the masks")
    pts, cols, msg = _random(scene, ids, n_random, seed)
    return InitResult(pts, cols, "random", f"{why}; falling back to {msg}")


def _sparse_plus_mvs(scene: SceneData, ids: list[int], use_sfm: bool, masks, max_points: int):
    """(points, colors, method used, message, stereo depth maps): the sparse points (the dataset's SfM points or SIFT
    triangulation) and the plane-sweep stereo points of the views ``ids`` (inside ``masks`` when given). The
    method is "mvs", or the sparse points' own ("sfm", "triangulate") when stereo added none."""
    if use_sfm:
        sparse = np.asarray(scene.points, np.float32)
        scols = (np.asarray(scene.point_colors, np.float32) if scene.point_colors is not None
                 else np.full_like(sparse, 0.5))
        what, used = "SfM points from the dataset", "sfm"
    else:
        sparse, scols = triangulate_matches(scene, ids, max_points)
        what, used = "triangulated SIFT points", "triangulate"
    res = plane_sweep_points(scene.images[ids].numpy(), scene.cameras[ids], sparse,
                             None if masks is None else masks[ids].numpy(), scene.near, scene.far,
                             MVSConfig(max_points=max_points))
    pts = np.concatenate([sparse, res.points]).astype(np.float32)
    cols = np.concatenate([scols, res.colors]).astype(np.float32)
    msg = (f"{len(res.points)} plane-sweep stereo points + {len(sparse)} {what} from {len(ids)} views "
           f"({res.stats['seconds']:.0f} s)")
    return pts, cols, "mvs" if len(res.points) else used, msg, res.depths


def _dense(scene: SceneData, train_ids: list[int], seed: int, **_) -> tuple[np.ndarray, np.ndarray]:
    from .poses.initializer import dense_initializer  # lazily: it pulls in the stereo code

    return dense_initializer(scene, train_ids, seed)


def _mono_depth(scene: SceneData, train_ids: list[int], seed: int, depth_model: str | None = None,
                device: str = "cpu", cache_dir=None, **_) -> tuple[np.ndarray, np.ndarray, str]:
    from .poses.learned_init import mono_depth_points, mono_depth_summary  # lazily: transformers only when asked for

    if not depth_model:
        raise ValueError("--init mono-depth needs a depth model: give --depth-model (local folder or hub id)")
    pts, cols, st = mono_depth_points(scene, train_ids, depth_model, device=device, cache_dir=cache_dir)
    return pts, cols, f"{mono_depth_summary(st, len(pts))} of {depth_model}"


register_initializer("dense", _dense)
register_initializer("mono-depth", _mono_depth)
