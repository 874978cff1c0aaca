"""Features, matches and mapping with pycolmap (COLMAP 4): the first paths of the pose chain.

``build_database`` writes the views as PNGs into a work folder, extracts SIFT (affine-adapted, domain-size
pooled: wide 360-degree baselines need every match they can get), matches every pair (few images:
exhaustive is cheap) with guided matching, and verifies them geometrically. One shared camera when all views
have the same size and intrinsics (EXIF says one camera); the EXIF focal is given to COLMAP as a prior.

``incremental`` runs COLMAP's incremental mapper with options for few views (two-view tracks kept, fewer
inliers asked of the initial pair and of each new image, one model); ``global_sfm`` runs COLMAP's global
mapper (rotation averaging then global positioning, GLOMAP), which does not depend on a good initial pair.
Both return ``ColmapModel``: per registered view, its world->camera matrix and K, and the 3D points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import pycolmap

from .learned_matching import resolve_matcher

log = logging.getLogger(__name__)


@dataclass
class FeatureConfig:
    max_features: int = 8192
    peak_threshold: float = 0.004  # COLMAP's default 1/150 finds too few features on 400x400 renders
    affine: bool = True  # affine-adapted SIFT: tolerates the viewpoint change of wide baselines
    domain_size_pooling: bool = True
    guided_matching: bool = True
    max_ratio: float = 0.8
    min_num_inliers: int = 15  # per verified pair
    max_error_px: float = 4.0  # RANSAC threshold of the two-view verification
    threads: int = -1
    matcher: str = "auto"
    """sift, learned (only the matcher_model's matches), sift+learned (both, per pair), or auto (sift+learned
    when a matcher_model is given, else sift)."""
    matcher_model: str | None = None
    """Learned matcher (transformers LightGlue or SuperGlue): a local folder or a hub id such as
    ETH-CVG/lightglue_superpoint; it finds matches across wide baselines where SIFT finds none."""
    matcher_device: str = "auto"
    matcher_min_score: float = 0.2  # learned matches scored lower are dropped
    matcher_dedup_px: float = 1.0  # learned keypoints of one view closer than this are one keypoint


@dataclass
class MapperConfig:
    init_min_num_inliers: int = 50  # COLMAP: 100
    init_min_tri_angle: float = 8.0  # COLMAP: 16 (4 broke fern: measured, see benchmarks/results/poses.md)
    abs_pose_min_num_inliers: int = 15  # COLMAP: 30
    abs_pose_min_inlier_ratio: float = 0.15  # COLMAP: 0.25
    keep_two_view_tracks: bool = True
    refine_focal: bool = True
    seed: int = 0


@dataclass
class ColmapModel:
    """Registered views of one COLMAP model, in COLMAP's (arbitrary) world frame.

    Attributes:
        view_ids: indices (into the images given) of the registered views.
        viewmats: (R, 4, 4) float64 world->camera, OpenCV axes (COLMAP's).
        Ks: (R, 3, 3) float64 pinhole intrinsics, pixel centres at +0.5 (COLMAP's convention is ours).
        points, colors: (M, 3) float64 points and colours in [0, 1].
        errors: (M,) reprojection error (px); track_lengths: (M,).
        method: "incremental" or "global".
        observations: per registered view (same order), indices into ``points`` of the points it observes.
    """

    view_ids: list[int]
    viewmats: np.ndarray
    Ks: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    errors: np.ndarray
    track_lengths: np.ndarray
    method: str
    stats: dict = field(default_factory=dict)
    observations: list[np.ndarray] | None = None


def image_file_name(i: int) -> str:
    return f"{i:04d}.png"


def write_images(images: np.ndarray, folder: Path) -> list[str]:
    """(N, H, W, 3) float in [0, 1] -> folder/0000.png ...; returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, im in enumerate(images):
        name = image_file_name(i)
        Image.fromarray(np.clip(np.round(im * 255), 0, 255).astype(np.uint8)).save(folder / name)
        names.append(name)
    return names


def shared_camera(Ks: np.ndarray, focal_is_guess: bool) -> bool:
    """One camera for all views when they share intrinsics (same EXIF focal, or no EXIF at all)."""
    return focal_is_guess or bool(np.allclose(Ks, Ks[:1], rtol=1e-4))


def build_database(images: np.ndarray, Ks: np.ndarray, focal_is_guess: bool, work: Path,
                   cfg: FeatureConfig | None = None) -> tuple[Path, Path, dict]:
    """Write images, extract and match features into ``work/database.db``: SIFT, and/or a learned matcher's
    matches (``cfg.matcher``, ``cfg.matcher_model``: ``learned_matching``), verified geometrically.

    Returns (database path, image folder, stats: features per view, verified pairs, inlier matches)."""
    cfg = cfg or FeatureConfig()
    matcher, learned = resolve_matcher(cfg.matcher, cfg.matcher_model), None
    if matcher != "sift":  # load first: a model that cannot be loaded fails before any work
        from .learned_matching import load_matcher

        learned = load_matcher(cfg.matcher_model, cfg.matcher_device, cfg.matcher_min_score)
    image_dir, db = work / "images", work / "database.db"
    if db.exists():
        db.unlink()
    names = write_images(images, image_dir)
    single = shared_camera(Ks, focal_is_guess)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_PINHOLE"
    if not focal_is_guess and single:
        K = Ks[0]
        reader.camera_params = f"{0.5 * (K[0, 0] + K[1, 1])},{K[0, 2]},{K[1, 2]}"
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = cfg.threads
    ext.sift.max_num_features = cfg.max_features
    ext.sift.peak_threshold = cfg.peak_threshold
    ext.sift.estimate_affine_shape = cfg.affine
    ext.sift.domain_size_pooling = cfg.domain_size_pooling
    mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.PER_IMAGE
    if matcher == "learned":
        pycolmap.Database.open(str(db)).close()  # creates the tables
        pycolmap.import_images(db, image_dir, camera_mode=mode, image_names=names, options=reader)
    else:
        pycolmap.extract_features(db, image_dir, names, camera_mode=mode, reader_options=reader,
                                  extraction_options=ext, device=pycolmap.Device.cpu)
    if not focal_is_guess and not single:
        _set_focal_priors(db, names, Ks)
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = cfg.threads
    match.guided_matching = cfg.guided_matching
    match.sift.max_ratio = cfg.max_ratio
    ver = pycolmap.TwoViewGeometryOptions()
    ver.min_num_inliers = cfg.min_num_inliers
    ver.ransac.max_error = cfg.max_error_px
    ver.detect_watermark = False  # identical photos are caught before; sparse views need every pair
    if matcher != "learned":
        pycolmap.match_exhaustive(db, matching_options=match, verification_options=ver, device=pycolmap.Device.cpu)
    if learned is not None:
        from .learned_matching import add_learned_matches

        add_learned_matches(db, images, names, learned, matcher == "sift+learned", ver, work, cfg.matcher_dedup_px)
    return db, image_dir, database_stats(db, names)


def _set_focal_priors(db_path: Path, names: list[str], Ks: np.ndarray) -> None:
    """Per-image cameras: give each its EXIF focal as a prior (COLMAP would guess 1.2 x the long side)."""
    db = pycolmap.Database.open(str(db_path))
    try:
        for im in db.read_all_images():
            K = Ks[names.index(im.name)]
            cam = db.read_camera(im.camera_id)
            cam.params = np.array([0.5 * (K[0, 0] + K[1, 1]), K[0, 2], K[1, 2]])
            cam.has_prior_focal_length = True
            db.update_camera(cam)
    finally:
        db.close()


def database_stats(db_path: Path, names: list[str]) -> dict:
    """Features per view and, per verified pair (i, j) of view indices, the number of inlier matches."""
    db = pycolmap.Database.open(str(db_path))
    try:
        idx = {im.image_id: names.index(im.name) for im in db.read_all_images()}
        feats = {idx[k]: db.num_keypoints_for_image(k) for k in idx}
        pairs = {}
        ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(ids, geoms):
            a, b = pycolmap.pair_id_to_image_pair(pid)
            n = len(g.inlier_matches)
            if n:
                i, j = sorted((idx[a], idx[b]))
                pairs[(i, j)] = n
    finally:
        db.close()
    return {"features": [feats.get(i, 0) for i in range(len(names))], "pairs": pairs}


def _incremental_options(cfg: MapperConfig, n_views: int) -> pycolmap.IncrementalPipelineOptions:
    opt = pycolmap.IncrementalPipelineOptions()
    opt.multiple_models = False
    opt.min_model_size = 2
    opt.min_num_matches = 15
    opt.ba_refine_focal_length = cfg.refine_focal
    opt.ba_refine_extra_params = False
    opt.random_seed = cfg.seed
    opt.extract_colors = True
    m = opt.mapper
    m.init_min_num_inliers = cfg.init_min_num_inliers
    m.init_min_tri_angle = cfg.init_min_tri_angle
    m.abs_pose_min_num_inliers = cfg.abs_pose_min_num_inliers
    m.abs_pose_min_inlier_ratio = cfg.abs_pose_min_inlier_ratio
    m.random_seed = cfg.seed
    opt.triangulation.ignore_two_view_tracks = not cfg.keep_two_view_tracks
    opt.triangulation.random_seed = cfg.seed
    return opt


def incremental(db: Path, image_dir: Path, work: Path, n_views: int, cfg: MapperConfig | None = None) -> ColmapModel | None:
    """COLMAP incremental mapping for few views; the largest model, or None when none was built."""
    cfg = cfg or MapperConfig()
    out = work / "incremental"
    out.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(db, image_dir, out, options=_incremental_options(cfg, n_views))
    return _largest(models, "incremental", cfg.refine_focal)


def global_sfm(db: Path, image_dir: Path, work: Path, cfg: MapperConfig | None = None) -> ColmapModel | None:
    """COLMAP's global mapper (GLOMAP): rotation averaging, global positioning, bundle adjustment."""
    cfg = cfg or MapperConfig()
    out = work / "global"
    out.mkdir(parents=True, exist_ok=True)
    opt = pycolmap.GlobalPipelineOptions()
    opt.multiple_models = False
    opt.min_model_size = 2
    opt.random_seed = cfg.seed
    opt.mapper.random_seed = cfg.seed
    opt.mapper.global_positioning.use_gpu = False
    opt.mapper.global_positioning.min_num_view_per_track = 2
    opt.mapper.bundle_adjustment.ceres.use_gpu = False
    opt.mapper.bundle_adjustment.refine_focal_length = cfg.refine_focal
    opt.mapper.bundle_adjustment.refine_extra_params = False
    opt.mapper.bundle_adjustment.min_track_length = 2
    opt.mapper.track_min_num_views_per_track = 2
    opt.mapper.retriangulation.ignore_two_view_tracks = not cfg.keep_two_view_tracks
    models = pycolmap.global_mapping(db, image_dir, out, options=opt)
    return _largest(models, "global", cfg.refine_focal)


def _largest(models: dict, method: str, refine_focal: bool) -> ColmapModel | None:
    if not models:
        return None
    rec = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    if rec.num_reg_images() < 2:
        return None
    final_bundle_adjustment(rec, refine_focal)
    return to_model(rec, method)


def final_bundle_adjustment(rec: "pycolmap.Reconstruction", refine_focal: bool, iters: int = 200) -> None:
    """A last, tightly converged global bundle adjustment. The mappers stop theirs early (gradient tolerance
    1e-4), which costs accuracy that few views cannot average away; this is cheap at 3-30 views."""
    opt = pycolmap.BundleAdjustmentOptions()
    opt.refine_focal_length = refine_focal
    opt.refine_principal_point = False
    opt.refine_extra_params = False
    opt.print_summary = False
    opt.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    sol = opt.ceres.solver_options
    sol.max_num_iterations = iters
    sol.function_tolerance = 1e-12
    sol.gradient_tolerance = 1e-12
    sol.parameter_tolerance = 1e-12
    pycolmap.bundle_adjustment(rec, opt)


def to_model(rec: "pycolmap.Reconstruction", method: str) -> ColmapModel:
    """Registered views, cameras and points of a pycolmap Reconstruction."""
    point_ids = list(rec.points3D.keys())
    pts = [rec.points3D[k] for k in point_ids]
    row = {k: n for n, k in enumerate(point_ids)}
    ids, V, K, seen = [], [], [], []
    for image_id in sorted(rec.reg_image_ids()):
        im = rec.image(image_id)
        ids.append(int(Path(im.name).stem))
        M = np.eye(4)
        M[:3] = im.cam_from_world().matrix()
        V.append(M)
        K.append(im.camera.calibration_matrix())
        seen.append(np.array([row[p.point3D_id] for p in im.points2D if p.has_point3D()], np.int64))
    order = np.argsort(ids)
    P = np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3)
    C = np.array([p.color for p in pts], dtype=np.float64).reshape(-1, 3) / 255.0
    err = np.array([p.error for p in pts], dtype=np.float64)
    tl = np.array([p.track.length() for p in pts], dtype=np.int64)
    return ColmapModel(view_ids=[ids[k] for k in order], viewmats=np.stack(V)[order], Ks=np.stack(K)[order],
                       points=P, colors=C, errors=err, track_lengths=tl, method=method,
                       observations=[seen[k] for k in order])


def read_matches(db_path: Path, n_views: int) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray]]:
    """Keypoints per view ((n, 2) pixel positions, centres at +0.5) and the verified inlier matches
    {(i, j): (k, 2) keypoint indices, i < j} from a database built by ``build_database``."""
    db = pycolmap.Database.open(str(db_path))
    try:
        idx = {im.image_id: int(Path(im.name).stem) for im in db.read_all_images()}
        kps = [np.zeros((0, 2))] * n_views
        for image_id, v in idx.items():
            kps[v] = np.asarray(db.read_keypoints(image_id), np.float64)[:, :2]
        matches = {}
        ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(ids, geoms):
            a, b = pycolmap.pair_id_to_image_pair(pid)
            m = np.asarray(g.inlier_matches, np.int64).reshape(-1, 2)
            if len(m):
                i, j = idx[a], idx[b]
                matches[(i, j) if i < j else (j, i)] = m if i < j else m[:, ::-1]
    finally:
        db.close()
    return kps, matches
