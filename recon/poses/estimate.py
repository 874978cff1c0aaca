"""``estimate_poses``: cameras for unposed photos, trying pycolmap incremental -> global -> OpenCV chain.

Each path runs on the same features and verified matches (``colmap_sfm.build_database``). The chain stops
as soon as a path registers every view; otherwise the model with the most registered views wins and the
others are named in a warning (the caller continues with the registered subset, >= 2 views). Bad input is
caught before SfM with a message saying what is wrong: fewer than 2 photos, all photos identical, photos
that share no feature matches at all.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .colmap_sfm import ColmapModel, FeatureConfig, MapperConfig, build_database, global_sfm, incremental, read_matches
from .conflicts import ConflictConfig, model_conflicts, remove_pairs
from .fallback import FallbackConfig, fallback_sfm
from .native_log import native_output_to

METHODS = ("incremental", "global", "opencv")


class PoseEstimationError(ValueError):
    """The photos could not be posed; the message says why and what to do."""


@dataclass
class PoseConfig:
    """How poses are estimated from unposed photos."""

    methods: tuple[str, ...] = METHODS
    """Paths tried in order until one registers every view: incremental, global, opencv."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    conflicts: ConflictConfig = field(default_factory=ConflictConfig)
    """Views a model places together but that see different points (symmetric structure): their matches
    are removed and the path maps again."""
    refine_focal: str = "guess"
    """Refine the focal length in bundle adjustment: always, never, or guess (only when it is not from EXIF)."""
    work_dir: Path | None = None
    """Keep COLMAP's database and models here (default: a temporary folder)."""
    log_file: Path | None = None
    """Append COLMAP's own log here instead of the terminal (default: a file in the work folder)."""


@dataclass
class PoseEstimate:
    """Cameras of the registered views in the SfM frame (arbitrary position, orientation and scale).

    Attributes:
        registered: indices (into the input images) of the posed views, ascending.
        dropped: indices of the views that could not be posed.
        viewmats: (R, 4, 4) float64 world->camera of the registered views (OpenCV axes).
        Ks: (R, 3, 3) float64 intrinsics of the registered views.
        points, colors: (M, 3) sparse SfM points and colours in [0, 1].
        method: the path whose model was kept ("incremental", "global" or "opencv").
        tried: per path tried, how many views it registered (-1: no model).
        stats: features per view, verified pairs; seconds: per stage.
        unlinked: view pairs whose matches were removed as wrong links (``conflicts``).
        conflicts: view pairs of the kept model that still contradict each other (should be empty).
    """

    registered: list[int]
    dropped: list[int]
    viewmats: np.ndarray
    Ks: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    method: str
    tried: dict[str, int]
    stats: dict
    seconds: dict[str, float]
    unlinked: tuple = ()
    conflicts: tuple = ()

    def message(self, names: Sequence[str]) -> str:
        n = len(self.registered) + len(self.dropped)
        tried = ", ".join(f"{k}: {v if v >= 0 else 'no model'}" for k, v in self.tried.items())
        msg = (f"poses: {len(self.registered)}/{n} views registered by the {self.method} path ({tried}); "
               f"{len(self.points)} sparse points")
        if self.dropped:
            msg += "; dropped (no reliable matches to the others): " + ", ".join(names[i] for i in self.dropped)
        if self.unlinked:
            msg += (f"; {len(self.unlinked)} wrong links removed (matched views that the model put together but "
                    "that see different points): " + _pair_names(self.unlinked, names))
        if self.conflicts:
            msg += ("; WARNING: these views are placed together but see different points, one of each pair is "
                    "probably posed wrongly (symmetric or repeated structure): " + _pair_names(self.conflicts, names))
        return msg


def _pair_names(pairs, names: Sequence[str]) -> str:
    return ", ".join(f"{names[i]}~{names[j]}" for i, j in pairs)


def _thumbs(images: np.ndarray, size: int = 64) -> np.ndarray:
    return np.stack([cv2.resize(np.ascontiguousarray(im, np.float32), (size, size), interpolation=cv2.INTER_AREA)
                     for im in images])


def check_photos(images: np.ndarray, names: Sequence[str]) -> None:
    """Raise PoseEstimationError for fewer than 2 photos or all photos (nearly) identical."""
    if len(images) < 2:
        raise PoseEstimationError(f"pose estimation needs at least 2 photos (3 or more recommended), got {len(images)}")
    t = _thumbs(images)
    diff = np.abs(t - t[:1]).reshape(len(t), -1).mean(axis=1)
    if np.all(diff[1:] < 1.0 / 255):
        raise PoseEstimationError(
            f"all {len(images)} photos ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) are the same "
            "image: poses need photos taken from different positions around the subject")
    if min(images.shape[1:3]) < 32:
        raise PoseEstimationError(f"photos of {images.shape[2]}x{images.shape[1]} pixels are too small to match; "
                                  "use photos of at least 200 pixels a side")


def _overlap_error(stats: dict, names: Sequence[str]) -> PoseEstimationError:
    feats = stats["features"]
    few = [f"{names[i]} ({n})" for i, n in enumerate(feats) if n < 100]
    why = f"; few features (blurred, dark or textureless?) in: {', '.join(few)}" if few else ""
    return PoseEstimationError(
        f"no two of the {len(names)} photos share enough feature matches to relate them{why}. "
        "The photos must overlap: take them from nearby viewpoints (about 10-30 degrees apart) of the same subject")


class _Matches:
    """The verified matches in the database, read once when a path needs them; wrong links removed from both."""

    def __init__(self, db: Path, n_views: int):
        self.db, self.n_views, self._read = db, n_views, None
        self.unlinked: list[tuple[int, int]] = []

    def __call__(self):
        if self._read is None:
            self._read = read_matches(self.db, self.n_views)
        return self._read

    def unlink(self, pairs) -> list[tuple[int, int]]:
        removed = remove_pairs(self.db, pairs, self._read[1] if self._read is not None else None)
        self.unlinked += [p for p in removed if p not in self.unlinked]
        return removed


def _run(method: str, db, image_dir, work, matches: _Matches, Ks, cfg: PoseConfig, n: int) -> ColmapModel | None:
    with native_output_to(cfg.log_file or Path(work) / "colmap.log"):
        return _run_method(method, db, image_dir, work, matches, Ks, cfg, n)


def _run_method(method: str, db, image_dir, work, matches: _Matches, Ks, cfg: PoseConfig, n: int) -> ColmapModel | None:
    if method == "incremental":
        return incremental(db, image_dir, work, n, cfg.mapper)
    if method == "global":
        return global_sfm(db, image_dir, work, cfg.mapper)
    if method == "opencv":
        kps, m = matches()
        return fallback_sfm(kps, m, Ks, cfg.fallback)
    raise ValueError(f"unknown pose method {method!r}; choose from {', '.join(METHODS)}")


def _run_consistent(method: str, db, image_dir, work, matches: _Matches, Ks, cfg: PoseConfig, size, names,
                    log) -> tuple[ColmapModel | None, list]:
    """``_run``, then while the model places views together that see different points, remove the verified
    pairs among them (the wrong links) and map again. Returns (model, conflicts left)."""
    n = len(names)
    model = _run(method, db, image_dir, work, matches, Ks, cfg, n)
    for _ in range(cfg.conflicts.rounds):
        conflicts = model_conflicts(model, *size, cfg.conflicts)
        if not conflicts:
            return model, []
        removed = matches.unlink(conflicts)
        log(f"{method} path: {len(conflicts)} view pairs placed together see different points (symmetric or "
            f"repeated structure): {_pair_names(conflicts, names)}; "
            + (f"removed the matches of {_pair_names(removed, names)} and mapping again" if removed
               else "no direct match between them to remove"))
        if not removed:
            return model, conflicts
        model = _run(method, db, image_dir, work, matches, Ks, cfg, n)
    return model, model_conflicts(model, *size, cfg.conflicts)


def estimate_poses(images: np.ndarray, Ks: np.ndarray, names: Sequence[str], focal_is_guess: bool = False,
                   cfg: PoseConfig | None = None, log: Callable[[str], None] = lambda s: None) -> PoseEstimate:
    """Poses of ``images`` (N, H, W, 3) float in [0, 1] with initial intrinsics ``Ks`` (N, 3, 3) (EXIF or a
    guess, ``focal_is_guess``). Raises PoseEstimationError when fewer than 2 views can be registered."""
    cfg = cfg or PoseConfig()
    images = np.asarray(images, np.float32)
    Ks = np.asarray(Ks, np.float64)
    check_photos(images, names)
    with tempfile.TemporaryDirectory(prefix="sparsesplat_sfm_") as tmp:
        work = Path(cfg.work_dir) if cfg.work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        secs = {}
        t0 = time.perf_counter()
        log_file = cfg.log_file or work / "colmap.log"
        log(f"poses: features and matching on {len(images)} photos...")
        with native_output_to(log_file):
            db, image_dir, stats = build_database(images, Ks, focal_is_guess, work, cfg.features)
        secs["matching"] = time.perf_counter() - t0
        log(f"features per view: {stats['features']}; {len(stats['pairs'])} overlapping pairs "
            f"({secs['matching']:.0f} s)")
        if not stats["pairs"]:
            raise _overlap_error(stats, names)
        mapper = cfg.mapper
        mapper.refine_focal = {"always": True, "never": False}.get(cfg.refine_focal, focal_is_guess)
        matches = _Matches(db, len(images))
        size = (images.shape[2], images.shape[1])

        def rank(model, conflicts):  # a consistent model beats one with more views that contradict each other
            return (not conflicts, len(model.view_ids))

        best, best_conflicts, tried = None, [], {}
        for method in cfg.methods:
            t0 = time.perf_counter()
            log(f"poses: mapping ({method} path)...")
            try:
                model, conflicts = _run_consistent(method, db, image_dir, work, matches, Ks, cfg, size, names, log)
            except (RuntimeError, ValueError, np.linalg.LinAlgError, cv2.error) as e:  # a path failing is not fatal
                log(f"{method} path failed: {e}")
                model, conflicts = None, []
            secs[method] = time.perf_counter() - t0
            tried[method] = len(model.view_ids) if model is not None else -1
            log(f"{method} path: {tried[method] if model is not None else 'no model'} views registered "
                f"({secs[method]:.0f} s)")
            if model is not None and (best is None or rank(model, conflicts) > rank(best, best_conflicts)):
                best, best_conflicts = model, conflicts
            if best is not None and len(best.view_ids) == len(images) and not best_conflicts:
                break
    if best is None or len(best.view_ids) < 2:
        raise PoseEstimationError(
            f"could not register 2 of the {len(images)} photos (tried {', '.join(cfg.methods)}); "
            f"{len(stats['pairs'])} photo pairs overlap. Add photos between the existing viewpoints")
    dropped = [i for i in range(len(images)) if i not in best.view_ids]
    est = PoseEstimate(registered=list(best.view_ids), dropped=dropped, viewmats=best.viewmats, Ks=best.Ks,
                       points=best.points, colors=best.colors, method=best.method, tried=tried, stats=stats,
                       seconds=secs, unlinked=tuple(matches.unlinked), conflicts=tuple(best_conflicts))
    if dropped or best_conflicts:
        warnings.warn(est.message(names), RuntimeWarning, stacklevel=2)
    return est
