"""PlayCanvas's SOG ("spatially ordered Gaussians", version 2): a zip of ``meta.json`` and lossless WebP images.

Every per-splat image is W x H RGBA (W = 4 ceil(sqrt(N) / 4), H = 4 ceil(N / W / 4)); texel i (row-major)
holds splat i, in Morton order:

| image | R G B | A |
|---|---|---|
| means_l, means_u | low / high byte of 16-bit x y z of sign(v) log(|v| + 1) in meta's mins..maxs | 255 |
| quats | the three smaller components of the unit wxyz quaternion times sqrt(2), as 255 (v / 2 + 1/2) | 252 + largest |
| scales | indices into meta's 256-entry codebook of log-scales | 255 |
| sh0 | indices into the 256-entry codebook of f_dc values | 255 opacity |
| shN_labels | 16-bit palette index (R low byte) | 255 |

``shN_centroids`` holds the SH palette: entry l, coefficient j at texel (64 l mod 64 * coeffs + j, l // 64),
R G B = codebook indices of the channel's coefficient. The palette is every splat's own SH when there are
at most 65,536 splats, else k-means centres. Codebooks are 1-D Lloyd-Max quantizers fitted to the values.
WebP images are written with ``exact`` so colour under zero alpha survives.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from ..kinds.gaussian.ply import RawGaussians
from .codec import as_numpy, logit, morton_order, sigmoid, to_raw
from .errors import SplatFormatError

VERSION = 2
MAX_PALETTE = 65536
PALETTE_ROW = 64
KMEANS_ITERS = 6
PCA_DIMS = 8


# ----------------------------------------------------------------------------------------------- pieces


def _size(n: int) -> tuple[int, int]:
    w = int(math.ceil(math.sqrt(n) / 4)) * 4
    return w, int(math.ceil(n / w / 4)) * 4


def _log_t(v):
    return np.sign(v) * np.log1p(np.abs(v))


def _exp_t(t):
    return np.sign(t) * np.expm1(np.abs(t))


def codebook_1d(values: np.ndarray, k: int = 256, iters: int = 25, log_sizes: bool = False) -> np.ndarray:
    """A sorted k-entry codebook for ``values``: Lloyd-Max on a fine histogram whose bins weigh sqrt(count)
    (plain counts starve the sparse tails, where rare but visible values sit) times exp(value) when the values
    are log-sizes (an error in a big splat's size shows more). Measured on the renders of fern's and DTU's
    scenes: log-scale codebooks at 59 dB with these weights, 35 and 32 dB with plain counts."""
    v = np.asarray(values, np.float64).reshape(-1)
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12:
        return np.full(k, lo)
    counts, edges = np.histogram(v, bins=8192, range=(lo, hi))
    sums = np.histogram(v, bins=8192, range=(lo, hi), weights=v)[0]
    mid = np.divide(sums, counts, out=0.5 * (edges[:-1] + edges[1:]), where=counts > 0)
    keep = counts > 0
    x, w = mid[keep], np.sqrt(counts[keep].astype(np.float64))
    if log_sizes:
        w = w * np.exp(x - x.max())
    if len(x) <= k:
        return np.sort(np.concatenate([x, np.full(k - len(x), x[-1])]))
    cum = np.cumsum(w) / w.sum()
    centres = np.interp((np.arange(k) + 0.5) / k, cum, x)
    for _ in range(iters):
        centres = np.unique(centres)
        cut = 0.5 * (centres[1:] + centres[:-1])
        lab = np.searchsorted(cut, x)
        wsum = np.bincount(lab, weights=w, minlength=len(centres))
        xsum = np.bincount(lab, weights=w * x, minlength=len(centres))
        centres = np.where(wsum > 0, xsum / np.maximum(wsum, 1e-30), centres)
    centres = np.sort(centres)
    return np.concatenate([centres, np.full(k - len(centres), centres[-1])]) if len(centres) < k else centres


def _labels(values: np.ndarray, book: np.ndarray) -> np.ndarray:
    cut = 0.5 * (book[1:] + book[:-1])
    return np.searchsorted(cut, values).astype(np.uint8)


def _palette(rest: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(K, D) SH palette and (N,) labels: every splat its own entry up to 65,536, else k-means.

    The k-means assigns in the space of the data's leading principal components (a k-d tree there is fast;
    in all 45 dimensions it is a brute-force search) and averages the full vectors."""
    n = len(rest)
    if n <= MAX_PALETTE:
        return rest, np.arange(n)
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    mean = rest.mean(axis=0)
    sample = rest[rng.choice(n, min(n, 20000), replace=False)] - mean
    basis = np.linalg.svd(sample, full_matrices=False)[2][:PCA_DIMS].T
    low = (rest - mean) @ basis
    centres = rest[rng.choice(n, MAX_PALETTE, replace=False)]
    for _ in range(KMEANS_ITERS):
        labels = cKDTree((centres - mean) @ basis).query(low, workers=-1)[1]
        counts = np.bincount(labels, minlength=MAX_PALETTE)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, rest)
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
    return centres, cKDTree((centres - mean) @ basis).query(low, workers=-1)[1]


def _webp(texels: np.ndarray, w: int, h: int) -> bytes:
    from PIL import Image

    img = np.zeros((w * h, 4), np.uint8)
    img[: len(texels)] = texels
    buf = io.BytesIO()
    Image.fromarray(img.reshape(h, w, 4), "RGBA").save(buf, "WEBP", lossless=True, exact=True, quality=100)
    return buf.getvalue()


def _rgba(r, g, b, a) -> np.ndarray:
    return np.stack([np.broadcast_to(np.asarray(c, np.uint8), np.shape(r)) for c in (r, g, b, a)], axis=1)


# ----------------------------------------------------------------------------------------------- writing


def write_sog(path: Path, raw: RawGaussians) -> None:
    a = as_numpy(raw)
    order = morton_order(a["means"])
    means, q, log_s, sh = a["means"][order], a["quats"][order], a["log_scales"][order], a["sh"][order]
    alpha = sigmoid(a["opacity_logits"][order])
    n, k = sh.shape[:2]
    w, h = _size(n)
    files: dict[str, bytes] = {}

    t = _log_t(means)
    mins, maxs = t.min(axis=0), t.max(axis=0)
    span = np.where(maxs > mins, maxs - mins, 1.0)
    m16 = np.clip(np.round((t - mins) / span * 65535.0), 0, 65535).astype(np.uint32)
    files["means_l.webp"] = _webp(_rgba(*(m16[:, i] & 255 for i in range(3)), 255), w, h)
    files["means_u.webp"] = _webp(_rgba(*(m16[:, i] >> 8 for i in range(3)), 255), w, h)

    largest = np.argmax(np.abs(q), axis=1)
    qs = q * (np.sign(q[np.arange(n), largest]) * math.sqrt(2.0))[:, None]
    others = qs[np.arange(n)[:, None], np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]]
    qb = np.clip(np.round(255.0 * (others * 0.5 + 0.5)), 0, 255).astype(np.uint8)
    files["quats.webp"] = _webp(_rgba(qb[:, 0], qb[:, 1], qb[:, 2], 252 + largest), w, h)

    scale_book = codebook_1d(log_s, log_sizes=True)
    sl = _labels(log_s, scale_book)
    files["scales.webp"] = _webp(_rgba(sl[:, 0], sl[:, 1], sl[:, 2], 255), w, h)

    dc_book = codebook_1d(sh[:, 0, :])
    dl = _labels(sh[:, 0, :], dc_book)
    ab = np.clip(np.round(alpha * 255.0), 0, 255).astype(np.uint8)
    files["sh0.webp"] = _webp(_rgba(dl[:, 0], dl[:, 1], dl[:, 2], ab), w, h)

    meta = {"version": VERSION, "asset": {"generator": "sparsesplat"}, "count": int(n),
            "means": {"mins": mins.tolist(), "maxs": maxs.tolist(), "files": ["means_l.webp", "means_u.webp"]},
            "scales": {"codebook": scale_book.tolist(), "files": ["scales.webp"]},
            "quats": {"files": ["quats.webp"]},
            "sh0": {"codebook": dc_book.tolist(), "files": ["sh0.webp"]}}
    if k > 1:
        coeffs = k - 1
        rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * coeffs)  # channel-major: R coeffs, G, B
        centres, labels = _palette(rest)
        book = codebook_1d(centres)
        cl = _labels(centres, book).reshape(len(centres), 3, coeffs)
        rows = -(-len(centres) // PALETTE_ROW)
        tex = np.zeros((rows * PALETTE_ROW, coeffs, 4), np.uint8)
        tex[: len(centres), :, :3] = cl.transpose(0, 2, 1)
        tex[:, :, 3] = 255
        files["shN_centroids.webp"] = _webp(tex.reshape(-1, 4), PALETTE_ROW * coeffs, rows)
        lab = labels.astype(np.uint32)
        files["shN_labels.webp"] = _webp(_rgba(lab & 255, lab >> 8, 0, 255), w, h)
        meta["shN"] = {"count": int(len(centres)), "bands": {3: 1, 8: 2, 15: 3}[coeffs], "codebook": book.tolist(),
                       "files": ["shN_centroids.webp", "shN_labels.webp"]}
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                z.writestr(name, data)
            z.writestr("meta.json", json.dumps(meta, separators=(",", ":")))


# ----------------------------------------------------------------------------------------------- reading


def _open_zip(path: Path) -> tuple[dict, zipfile.ZipFile]:
    try:
        z = zipfile.ZipFile(path)
        meta = json.loads(z.read("meta.json"))
    except zipfile.BadZipFile as e:
        raise SplatFormatError(f"{path}: not a SOG file (not a readable zip: {e})") from None
    except KeyError:
        raise SplatFormatError(f"{path}: not a SOG file (the zip has no meta.json)") from None
    except (ValueError, OSError, EOFError, zipfile.LargeZipFile) as e:
        raise SplatFormatError(f"{path}: meta.json is unreadable ({e})") from None
    return meta, z


def _image(path: Path, z: zipfile.ZipFile, name: str, n: int, min_width: int = 0) -> np.ndarray:
    from PIL import Image

    try:
        img = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGBA"))
    except KeyError:
        raise SplatFormatError(f"{path}: the SOG file lacks {name}, which meta.json names") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise SplatFormatError(f"{path}: {name} is not a readable WebP image ({e})") from None
    if img.shape[0] * img.shape[1] < n or img.shape[1] < min_width:
        raise SplatFormatError(f"{path}: {name} is {img.shape[1]}x{img.shape[0]}, too small for {n} entries")
    return img


def read_sog(path: Path) -> RawGaussians:
    meta, z = _open_zip(path)
    with z:
        try:
            version = meta.get("version", 1)
            if version != VERSION:
                raise SplatFormatError(f"{path}: SOG version {version} is not supported (this reader knows "
                                       f"version {VERSION})")
            n = int(meta["count"])
            if n <= 0:
                raise SplatFormatError(f"{path}: the SOG file holds no splats")

            def texels(key: str, i: int) -> np.ndarray:
                img = _image(path, z, meta[key]["files"][i], n)
                return img.reshape(-1, 4)[:n].astype(np.int64)

            def book(key: str) -> np.ndarray:
                b = np.asarray(meta[key]["codebook"], np.float64)
                if b.shape != (256,) or not np.isfinite(b).all():
                    raise SplatFormatError(f"{path}: the {key} codebook must be 256 finite numbers")
                return b

            lo_, hi_ = texels("means", 0), texels("means", 1)
            m16 = lo_[:, :3] | (hi_[:, :3] << 8)
            mins, maxs = np.asarray(meta["means"]["mins"], np.float64), np.asarray(meta["means"]["maxs"], np.float64)
            span = np.where(maxs - mins != 0, maxs - mins, 1.0)
            means = _exp_t(mins + span * (m16 / 65535.0))

            qt = texels("quats", 0)
            largest = qt[:, 3] - 252
            valid = (largest >= 0) & (largest <= 3)
            others = (qt[:, :3] / 255.0 * 2.0 - 1.0) / math.sqrt(2.0)
            quats = np.zeros((n, 4))
            lg = np.where(valid, largest, 0)
            quats[np.arange(n)[:, None], np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[lg]] = others
            quats[np.arange(n), lg] = np.sqrt(np.maximum(0.0, 1.0 - (others ** 2).sum(axis=1)))
            quats[~valid] = [1.0, 0.0, 0.0, 0.0]

            log_scales = book("scales")[texels("scales", 0)[:, :3]]
            s0 = texels("sh0", 0)
            dc = book("sh0")[s0[:, :3]]
            opacity = logit(s0[:, 3] / 255.0)
            sh = dc[:, None, :]
            if "shN" in meta:
                bands = int(meta["shN"]["bands"])
                if bands not in (1, 2, 3):
                    raise SplatFormatError(f"{path}: {bands} SH bands; SOG holds 1 to 3")
                coeffs = (bands + 1) ** 2 - 1
                count = int(meta["shN"]["count"])
                cen = _image(path, z, meta["shN"]["files"][0], 0, PALETTE_ROW * coeffs)
                if cen.shape[1] != PALETTE_ROW * coeffs or cen.shape[0] * PALETTE_ROW < count:
                    raise SplatFormatError(f"{path}: shN_centroids is {cen.shape[1]}x{cen.shape[0]}; {count} entries "
                                           f"of {coeffs} coefficients need {PALETTE_ROW * coeffs} x "
                                           f"{-(-count // PALETTE_ROW)}")
                palette = book("shN")[cen[:, :, :3].reshape(-1, coeffs, 3)[:count]]  # (K, coeffs, 3)
                lab = texels("shN", 1)
                lab = lab[:, 0] | (lab[:, 1] << 8)
                rest = np.where((lab < count)[:, None, None], palette[np.minimum(lab, count - 1)], 0.0)
                sh = np.concatenate([sh, rest], axis=1)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            if isinstance(e, SplatFormatError):
                raise
            raise SplatFormatError(f"{path}: meta.json lacks or mis-states a field ({type(e).__name__}: {e})") from None
    return to_raw(means, quats, log_scales, opacity, sh)
