"""Learned feature matching for pose estimation: matches SIFT cannot find across wide baselines.

SIFT finds no correct match between views 45 degrees or more apart on a 360-degree orbit (lego 8 views,
measured), so only one group of views registers. A learned matcher (SuperPoint + LightGlue, or SuperGlue,
through ``transformers``) is trained for exactly those viewpoint changes. This module runs one on every pair
of the (few) views and writes its matches into the COLMAP database ``colmap_sfm.build_database`` makes:

    keypoints per view    the matched keypoints of all pairs, merged per view (keypoints closer than
                          ``dedup_px`` are one keypoint, so tracks span more than two views); with
                          "sift+learned" appended to SIFT's keypoints (the two detectors are kept apart)
    raw matches per pair  indices into those keypoints (with "sift+learned": added to SIFT's own)
    two-view geometries   pycolmap's geometric verification (``pycolmap.verify_matches``), as for SIFT

so the mappers read it unchanged. Keypoints follow COLMAP's convention: pixel (row i, col j) has its centre at
(j + 0.5, i + 0.5). Models load from a local folder (offline) or a hub id; no weights are downloaded by tests.

Pairs run one at a time (batch of one image pair): in transformers 5.x, batched LightGlue returns pairs out of
order when some stop early (cvg/LightGlue#171), and EfficientLoFTR pairs its coarse matches by position in
two differently ordered lists, which is wrong whenever the match is not order-preserving (a test shows it with
a permutation of cells), so it is refused. A pair of 640x480 images costs tens of milliseconds on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

MATCHERS = ("auto", "sift", "learned", "sift+learned")
SUPPORTED_MODELS = ("lightglue", "superglue")  # detector-based: keypoints relative to the processed image size
DOWNLOAD_HINT = ("download it on a machine with internet, e.g. `huggingface-cli download ETH-CVG/lightglue_superpoint "
                 "--local-dir lightglue_superpoint`, copy the folder here and pass it (--matcher-model "
                 "lightglue_superpoint)")


class MatcherLoadError(ValueError):
    """The learned matcher could not be loaded; the message names it and says what to do."""


@dataclass
class PairMatches:
    """Matches of one image pair: ``xy0``, ``xy1`` (K, 2) float64 COLMAP pixel positions (centres at +0.5) in
    the two images, ``scores`` (K,) in [0, 1]."""

    xy0: np.ndarray
    xy1: np.ndarray
    scores: np.ndarray


class PairMatcher(Protocol):
    def __call__(self, image0: np.ndarray, image1: np.ndarray) -> PairMatches:
        """Match two (H, W, 3) float images in [0, 1]."""


def resolve_matcher(matcher: str, model: str | None) -> str:
    """"auto" -> "sift+learned" when a model is given, else "sift"; a learned matcher without a model is an error."""
    if matcher not in MATCHERS:
        raise ValueError(f"unknown matcher {matcher!r}; choose from {', '.join(MATCHERS)}")
    if matcher == "auto":
        return "sift+learned" if model else "sift"
    if matcher != "sift" and not model:
        raise ValueError(f"matcher {matcher!r} needs a model: pass --matcher-model (a local folder or hub id); "
                         + DOWNLOAD_HINT)
    return matcher


def model_pixels(rel_xy: np.ndarray, processed_wh: tuple[int, int], image_wh: tuple[int, int]) -> np.ndarray:
    """COLMAP pixel positions in the input image of detector keypoints given relative to the processed image.

    SuperPoint returns the integer pixel index of each keypoint divided by the processed size; that pixel's
    centre is index + 0.5, and a centre-aligned resize (PIL's) maps processed centre c to c * W / W_processed.
    (The image processor's own post-processing truncates to integers: up to a pixel lost.)"""
    pw, ph = processed_wh
    w, h = image_wh
    idx = np.asarray(rel_xy, np.float64) * [pw, ph]
    return (idx + 0.5) * [w / pw, h / ph]


class TransformersMatcher:
    """A transformers keypoint-matching model (``AutoModelForKeypointMatching``) with its image processor."""

    def __init__(self, model: str, device: str = "auto", min_score: float = 0.0):
        import torch

        self.name, self.min_score = str(model), min_score
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.processor, self.model = _load(self.name)
        self.model.to(self.device).eval()

    def __call__(self, image0: np.ndarray, image1: np.ndarray) -> PairMatches:
        import torch

        pair = [_uint8(image0), _uint8(image1)]
        size = self._size(*image0.shape[:2])
        inputs = self.processor([pair], return_tensors="pt", **({"size": size} if size else {}))
        pixels = inputs["pixel_values"].to(self.device)
        with torch.no_grad():
            out = self.model(pixel_values=pixels)
        ph, pw = pixels.shape[-2:]
        kp = out.keypoints.reshape(2, -1, 2).float().cpu().numpy()
        matches = out.matches.reshape(2, -1).cpu().numpy()
        scores = out.matching_scores.reshape(2, -1).float().cpu().numpy()
        mask = (out.mask.reshape(2, -1).cpu().numpy() > 0) if getattr(out, "mask", None) is not None else \
            np.ones(matches.shape, bool)
        m0 = matches[0]
        ok = mask[0] & (m0 > -1) & (m0 < kp.shape[1]) & (scores[0] > self.min_score)
        ok[ok] &= mask[1][m0[ok]]
        k0, k1 = np.nonzero(ok)[0], m0[ok]
        return PairMatches(xy0=model_pixels(kp[0, k0], (pw, ph), image0.shape[1::-1]),
                           xy1=model_pixels(kp[1, k1], (pw, ph), image1.shape[1::-1]),
                           scores=scores[0, k0].astype(np.float64))


    def _size(self, height: int, width: int) -> dict | None:
        """The processed size: the processor's longest side with the photo's aspect ratio, in multiples of 8
        (SuperPoint's cells). The processor alone would squash every photo to its fixed 640x480."""
        p = self.processor
        if not getattr(p, "do_resize", False) or getattr(p, "size", None) is None:
            return None
        long = max(v for v in (p.size.get("height"), p.size.get("width")) if v)
        s = long / max(height, width)
        return {"height": max(8, int(round(height * s / 8)) * 8), "width": max(8, int(round(width * s / 8)) * 8)}


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(image) * 255), 0, 255).astype(np.uint8)


def _load(name: str):
    """(processor, model); MatcherLoadError naming ``name`` and what to do when either cannot be loaded.
    A hub id is read from the hub cache first (no network retries when offline), then from the hub."""
    from sparsesplat.priors.depth import require, resolve_model_path

    transformers = require("transformers", "the learned matcher")
    transformers.utils.logging.disable_progress_bar()
    try:
        source, local = resolve_model_path(name, "matcher model")
    except FileNotFoundError as e:
        raise MatcherLoadError(f"matcher model folder {name} does not exist; " + DOWNLOAD_HINT) from e

    def load(cls, **kw):
        if local:
            return cls.from_pretrained(source, local_files_only=True, **kw)
        try:
            return cls.from_pretrained(source, local_files_only=True, **kw)
        except OSError:
            return cls.from_pretrained(source, **kw)

    try:
        config = load(transformers.AutoConfig)
    except (OSError, ValueError) as e:
        raise MatcherLoadError(f"could not load the matcher model {name!r} ({_first_line(e)}); " + DOWNLOAD_HINT) from e
    if config.model_type not in SUPPORTED_MODELS:
        why = (" (transformers' EfficientLoFTR pairs coarse matches by position in two differently ordered lists,"
               " wrong for any match that is not order-preserving)") if config.model_type == "efficientloftr" else ""
        raise MatcherLoadError(f"matcher model {name!r} is a {config.model_type!r} model{why}; supported: "
                               f"{', '.join(SUPPORTED_MODELS)} (e.g. ETH-CVG/lightglue_superpoint)")
    try:
        return load(transformers.AutoImageProcessor), load(transformers.AutoModelForKeypointMatching)
    except (OSError, ValueError) as e:
        raise MatcherLoadError(f"could not load the matcher model {name!r} ({_first_line(e)}); it must hold "
                               "config.json, preprocessor_config.json and the weights; " + DOWNLOAD_HINT) from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_matcher(model: str, device: str = "auto", min_score: float = 0.0) -> PairMatcher:
    """The matcher for ``model`` (local folder or hub id). Tests replace this to inject a stub matcher."""
    return TransformersMatcher(model, device, min_score)


# ----------------------------------------------------------------------------- keypoints and matches per view


def merge_keypoints(points: Sequence[np.ndarray], tol: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """One keypoint set from several (k_i, 2) sets of the same image: points closer than ``tol`` pixels (also
    through chains) become one keypoint, at the position first seen. Returns (merged (M, 2), per input set
    the (k_i,) row of each of its points in ``merged``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    sizes = [len(p) for p in points]
    P = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in points]) if sizes else np.zeros((0, 2))
    if len(P) == 0:
        return P, [np.zeros(0, np.int64) for _ in sizes]
    pairs = cKDTree(P).query_pairs(tol, output_type="ndarray") if tol > 0 else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(P), len(P)))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max() + 1, len(P))
    np.minimum.at(first, label, np.arange(len(P)))  # the first point of each group stands for it
    order = np.argsort(first)
    row_of_group = np.empty_like(order)
    row_of_group[order] = np.arange(len(order))
    rows = row_of_group[label]
    return P[first[order]], list(np.split(rows, np.cumsum(sizes)[:-1]))


def match_all_pairs(images: np.ndarray, matcher: PairMatcher, dedup_px: float = 1.0,
                    log: Callable[[str], None] = lambda s: None) -> tuple[list[np.ndarray], dict]:
    """Run ``matcher`` on every pair (i < j). Returns (keypoints per view (M_v, 2) COLMAP pixels,
    {(i, j): (K, 2) int64 rows into keypoints[i], keypoints[j]}), duplicate matches removed."""
    n = len(images)
    found = {}
    for i in range(n):
        for j in range(i + 1, n):
            found[(i, j)] = matcher(images[i], images[j])
    per_view = [[] for _ in range(n)]  # (pair, side, points)
    for (i, j), m in found.items():
        per_view[i].append(((i, j), 0, m.xy0))
        per_view[j].append(((i, j), 1, m.xy1))
    keypoints, rows = [], {}
    for v in range(n):
        merged, idx = merge_keypoints([p for _, _, p in per_view[v]], dedup_px)
        keypoints.append(merged)
        for (pair, side, _), r in zip(per_view[v], idx):
            rows[(pair, side)] = r
    matches = {}
    for pair in found:
        m = np.stack([rows[(pair, 0)], rows[(pair, 1)]], axis=1).astype(np.int64).reshape(-1, 2)
        matches[pair] = np.unique(m, axis=0) if len(m) else m
    log(f"learned matches: {sum(len(m) for m in matches.values())} in {len(matches)} pairs, "
        f"keypoints per view {[len(k) for k in keypoints]}")
    return keypoints, matches


# ----------------------------------------------------------------------------- the COLMAP database


def _as_rows(xy: np.ndarray, columns: int) -> np.ndarray:
    """(M, 2) positions as COLMAP keypoint rows of ``columns`` (2; 4: scale 1, orientation 0; 6: identity affine)."""
    out = np.zeros((len(xy), columns), np.float32)
    out[:, :2] = xy
    if columns == 4:
        out[:, 2] = 1.0
    elif columns == 6:
        out[:, 2] = out[:, 5] = 1.0
    return out


def write_to_database(db_path: Path, names: Sequence[str], keypoints: list[np.ndarray], matches: dict,
                      keep_existing: bool) -> list[tuple[str, str]]:
    """Add (``keep_existing``: append to SIFT's) keypoints and raw matches; clears every two-view geometry
    (they are verified again). Keeping SIFT's, a pair's raw matches become SIFT's raw matches plus its verified
    inliers (guided matching finds some the raw list lacks) plus the learned ones. Returns the pairs with
    matches, by image name, for verification."""
    import pycolmap

    db = pycolmap.Database.open(str(db_path))
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        offset = []
        for v, name in enumerate(names):
            iid = ids[name]
            old = np.asarray(db.read_keypoints(iid), np.float32) if db.exists_keypoints(iid) else None
            if keep_existing and old is not None and len(old):
                offset.append(len(old))
                db.update_keypoints(iid, np.concatenate([old, _as_rows(keypoints[v], old.shape[1])]))
            else:
                offset.append(0)
                if old is not None:
                    db.update_keypoints(iid, _as_rows(keypoints[v], 6))
                else:
                    db.write_keypoints(iid, _as_rows(keypoints[v], 6))
        pairs = []
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                ia, ib = ids[names[a]], ids[names[b]]
                parts = [np.asarray(matches.get((a, b), np.zeros((0, 2))), np.int64).reshape(-1, 2)
                         + [offset[a], offset[b]]]
                if keep_existing:
                    if db.exists_matches(ia, ib):
                        parts.append(np.asarray(db.read_matches(ia, ib), np.int64).reshape(-1, 2))
                    if db.exists_two_view_geometry(ia, ib):
                        parts.append(np.asarray(db.read_two_view_geometry(ia, ib).inlier_matches,
                                                np.int64).reshape(-1, 2))
                m = np.unique(np.concatenate(parts), axis=0)
                if db.exists_matches(ia, ib):
                    db.delete_matches(ia, ib)
                if len(m):
                    db.write_matches(ia, ib, m.astype(np.uint32))
                    pairs.append((names[a], names[b]))
        db.clear_two_view_geometries()
    finally:
        db.close()
    return pairs


def verify(db_path: Path, pairs: list[tuple[str, str]], work: Path, options) -> None:
    """pycolmap's geometric verification (``options``: TwoViewGeometryOptions) of the raw matches of ``pairs``."""
    import pycolmap

    pairs_file = work / "learned_pairs.txt"
    pairs_file.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    if pairs:
        pycolmap.verify_matches(db_path, pairs_file, options)


def add_learned_matches(db_path: Path, images: np.ndarray, names: Sequence[str], matcher: PairMatcher,
                        keep_existing: bool, verification, work: Path, dedup_px: float = 1.0,
                        log: Callable[[str], None] = lambda s: None) -> None:
    """Match every pair with ``matcher``, write keypoints and matches into the database and verify them."""
    keypoints, matches = match_all_pairs(images, matcher, dedup_px, log)
    pairs = write_to_database(db_path, names, keypoints, matches, keep_existing)
    verify(db_path, pairs, work, verification)
