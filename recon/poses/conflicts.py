"""Views joined the wrong way round: a check of a finished SfM model, and the fix.

Near-symmetric or repeated structure (the two sides of an object, identical windows) gives verified pairs
whose matches are real features seen from very different places. Enough of them and a mapper registers a
whole group of views on the wrong side (lego, 20 views: 5 of 16 views off by 24-176 degrees, every path
agreeing). Loop (cycle) checks cannot see it when the wrong pairs agree with each other.

What gives it away is what the model then claims: two views placed close together, looking the same way,
should see the same surface, so most of the points one view observes that project into the other should be
observed by the other too (on lego, correct pairs within 25 degrees share 16-95% of them). The views of a
wrongly placed group share almost none with the views they were placed beside (0-6%): their points are the
other side of the object. Those pairs are *conflicting* (Heinly et al., "Correcting for duplicate scene
structure in sparse 3D reconstruction", ECCV 2014, use the same evidence of missing correspondences).

The fix: the verified pairs among the conflicting ones are the wrong links; their matches are removed from
the database and the path maps again, until no conflict is left (or the rounds run out). Views that then
have no correct link left are dropped and named, which is better than wrong poses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .projection import in_image, project


@dataclass
class ConflictConfig:
    """When two views of a model contradict each other."""

    max_angle_deg: float = 25.0
    """Only pairs whose viewing directions the model puts within this angle are checked."""
    min_shared: float = 0.1
    """Conflict: of the points one view observes that project into the other, fewer than this fraction are
    observed by the other (in both directions)."""
    min_points: int = 100
    """... counted only when at least this many project each way (fewer is too little evidence)."""
    rounds: int = 3
    """Map again at most this many times after removing conflicting matches."""


def _in_view(viewmat: np.ndarray, K: np.ndarray, width: int, height: int, P: np.ndarray) -> np.ndarray:
    """Which points P (M, 3) project inside the image, in front of the camera."""
    return in_image(*project(viewmat, K, P), width, height)


def conflicting_pairs(viewmats: np.ndarray, Ks: np.ndarray, width: int, height: int, points: np.ndarray,
                      observations: Sequence[np.ndarray], cfg: ConflictConfig | None = None) -> list[tuple[int, int]]:
    """Pairs (a, b), a < b, of positions in ``viewmats`` that the model places close together but that do
    not observe the same points.

    viewmats (R, 4, 4) world->camera (OpenCV axes), Ks (R, 3, 3), points (M, 3); observations[r]: indices
    into points of the points view r observes.
    """
    cfg = cfg or ConflictConfig()
    V = np.asarray(viewmats, np.float64)
    P = np.asarray(points, np.float64)
    obs = [np.unique(np.asarray(o, np.int64)) for o in observations]
    axes = V[:, 2, :3] / np.linalg.norm(V[:, 2, :3], axis=1, keepdims=True)
    cos_max = np.cos(np.radians(cfg.max_angle_deg))
    out = []
    for a in range(len(V)):
        for b in range(a + 1, len(V)):
            if axes[a] @ axes[b] < cos_max or len(obs[a]) < cfg.min_points or len(obs[b]) < cfg.min_points:
                continue
            a_in_b = obs[a][_in_view(V[b], Ks[b], width, height, P[obs[a]])]
            b_in_a = obs[b][_in_view(V[a], Ks[a], width, height, P[obs[b]])]
            if len(a_in_b) < cfg.min_points or len(b_in_a) < cfg.min_points:
                continue
            shared = len(np.intersect1d(obs[a], obs[b], assume_unique=True))
            if max(shared / len(a_in_b), shared / len(b_in_a)) < cfg.min_shared:
                out.append((a, b))
    return out


def model_conflicts(model, width: int, height: int, cfg: ConflictConfig | None = None) -> list[tuple[int, int]]:
    """``conflicting_pairs`` of a ``ColmapModel``, as pairs of view indices (its ``view_ids``); none when the
    model does not record which points each view observes."""
    if model is None or model.observations is None:
        return []
    pairs = conflicting_pairs(model.viewmats, model.Ks, width, height, model.points, model.observations, cfg)
    return [(model.view_ids[a], model.view_ids[b]) for a, b in pairs]


def remove_pairs(db_path: Path, pairs: Sequence[tuple[int, int]], matches: dict | None = None) -> list[tuple[int, int]]:
    """Delete the verified matches of ``pairs`` (view indices) from the database built by
    ``colmap_sfm.build_database`` and from ``matches`` ({(i, j): ...}, i < j) when given. Returns the pairs
    that had verified matches (the links that joined the views)."""
    import pycolmap

    from .colmap_sfm import image_file_name

    removed = []
    db = pycolmap.Database.open(str(db_path))
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        for i, j in pairs:
            a, b = ids.get(image_file_name(i)), ids.get(image_file_name(j))
            if a is None or b is None or not db.exists_two_view_geometry(a, b):
                continue
            if len(db.read_two_view_geometry(a, b).inlier_matches):
                removed.append((min(i, j), max(i, j)))
            db.delete_two_view_geometry(a, b)
            db.delete_inlier_matches(a, b)
    finally:
        db.close()
    if matches is not None:
        for p in pairs:
            matches.pop((min(p), max(p)), None)
    return removed
