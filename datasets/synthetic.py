"""Procedural test scenes with exact ground truth, ray-cast in numpy.

A ground plane, boxes and spheres with fine, light-independent solid textures (checkers, stripes, value
noise) and fixed Lambertian shading (albedo * (ambient + diffuse * max(0, n.l))), so every view sees the
same colour at a surface point. ``make_scene`` renders images, alpha, z-depth and a sparse set of coloured
surface points from cameras on an orbit ("orbit") or a forward-facing arc ("forward", LLFF-like).
World z is up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.cameras import look_at

LIGHT = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])
AMBIENT, DIFFUSE = 0.35, 0.65


@dataclass
class SyntheticScene:
    """Rendered views with ground truth.

    Attributes:
        images: (N, H, W, 3) float32 in [0, 1], composited on ``background``.
        alphas: (N, H, W, 1) float32 pixel coverage by surfaces (0 where only sky is seen).
        depths: (N, H, W, 1) float32 z-depth of the surface at the pixel centre; inf where none.
        cameras: ``Cameras`` (float64), OpenCV axes.
        points, point_colors: (M, 3) float32 surface points and their colours in [0, 1].
        background: (3,) the colour behind the surfaces.
    """

    images: np.ndarray
    alphas: np.ndarray
    depths: np.ndarray
    cameras: Cameras
    points: np.ndarray
    point_colors: np.ndarray
    background: np.ndarray
    kind: str

    def straight_rgb(self) -> np.ndarray:
        """(N, H, W, 3) colour with the background removed (un-premultiplied), for RGBA files."""
        a = self.alphas
        rgb = (self.images - (1.0 - a) * self.background) / np.maximum(a, 1e-6)
        return np.where(a > 0, np.clip(rgb, 0, 1), 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- textures


def _hash(cells: np.ndarray, salt: float = 0.0) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (..., 3)."""
    s = np.sin(cells @ np.array([12.9898, 78.233, 37.719]) + salt) * 43758.5453
    return s - np.floor(s)


def _value_noise(p: np.ndarray, scale: float) -> np.ndarray:
    """Smooth 3D value noise in [0, 1) with features of size ``scale``."""
    q = p / scale
    c = np.floor(q)
    f = q - c
    f = f * f * (3 - 2 * f)
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                out = out + w * _hash(c + np.array([dx, dy, dz]))
    return out


def _checker(p: np.ndarray, size: float) -> np.ndarray:
    return (np.floor(p / size).sum(axis=1) % 2).astype(np.float64)


def _mix(a, b, t):
    return np.asarray(a)[None] * (1 - t[:, None]) + np.asarray(b)[None] * t[:, None]


def _albedo(obj: int, p: np.ndarray) -> np.ndarray:
    """(R, 3) albedo of object ``obj`` at world points p (R, 3)."""
    n1 = _value_noise(p, 0.07)
    if obj == 0:  # ground: checker with noise
        base = _mix((0.85, 0.8, 0.7), (0.25, 0.3, 0.45), _checker(p, 0.25))
        return base * (0.75 + 0.25 * n1[:, None])
    if obj == 1:  # red/yellow striped sphere
        t = 0.5 + 0.5 * np.sign(np.sin(p[:, 2] * 40.0 + 6.0 * np.sin(p[:, 0] * 7.0)))
        return _mix((0.85, 0.15, 0.1), (0.95, 0.85, 0.2), t) * (0.8 + 0.2 * n1[:, None])
    if obj == 2:  # green noise box
        n2 = _value_noise(p + 3.1, 0.03)
        return _mix((0.1, 0.45, 0.15), (0.6, 0.9, 0.4), 0.6 * n1 + 0.4 * n2)
    if obj == 3:  # blue/white checkered sphere
        return _mix((0.95, 0.95, 0.95), (0.1, 0.2, 0.8), _checker(p, 0.08))
    if obj == 4:  # purple/orange striped box
        t = 0.5 + 0.5 * np.sign(np.sin((p[:, 0] + p[:, 1]) * 30.0))
        return _mix((0.5, 0.2, 0.6), (0.95, 0.6, 0.2), t) * (0.85 + 0.15 * n1[:, None])
    # back wall: coloured blotches over fine noise
    n2 = _value_noise(p, 0.3)
    return _mix((0.3, 0.55, 0.75), (0.9, 0.75, 0.55), n2) * (0.7 + 0.3 * n1[:, None])


# ----------------------------------------------------------------------------- geometry


def _plane(o, d, axis: int, h: float, radius: float | None):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (h - o[:, axis]) / d[:, axis]
    t = np.where(np.isfinite(t) & (t > 1e-6), t, np.inf)
    if radius is not None:
        p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
        t = np.where(np.hypot(p[:, 0], p[:, 1]) < radius, t, np.inf)
    n = np.zeros_like(o)
    n[:, axis] = -np.sign(d[:, axis])
    return t, n


def _sphere(o, d, c, r):
    oc = o - c
    b = (oc * d).sum(1)
    disc = b * b - ((oc * oc).sum(1) - r * r)
    sq = np.sqrt(np.maximum(disc, 0))
    t0, t1 = -b - sq, -b + sq
    t = np.where(t0 > 1e-6, t0, np.where(t1 > 1e-6, t1, np.inf))
    t = np.where(disc > 0, t, np.inf)
    p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
    return t, (p - c) / r


def _box(o, d, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        ta, tb = (lo - o) * inv, (hi - o) * inv
    tmin = np.nanmax(np.minimum(ta, tb), axis=1)
    tmax = np.nanmin(np.maximum(ta, tb), axis=1)
    t = np.where((tmax >= tmin) & (tmin > 1e-6), tmin, np.inf)
    p = o + d * np.where(np.isfinite(t), t, 0)[:, None]
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    rel = (p - centre) / half
    axis = np.argmax(np.abs(rel), axis=1)
    n = np.zeros_like(o)
    n[np.arange(len(o)), axis] = np.sign(rel[np.arange(len(o)), axis])
    return t, n


def _objects(kind: str):
    objs = [
        (0, lambda o, d: _plane(o, d, 2, 0.0, 3.0 if kind == "orbit" else None)),
        (1, lambda o, d: _sphere(o, d, np.array([0.55, 0.25, 0.5]), 0.5)),
        (2, lambda o, d: _box(o, d, np.array([-1.1, -0.4, 0.0]), np.array([-0.35, 0.35, 0.8]))),
        (3, lambda o, d: _sphere(o, d, np.array([-0.15, -0.75, 0.3]), 0.3)),
        (4, lambda o, d: _box(o, d, np.array([0.2, 0.8, 0.0]), np.array([0.9, 1.3, 1.2]))),
    ]
    if kind == "forward":
        objs.append((5, lambda o, d: _plane(o, d, 1, 2.2, None)))
    return objs


def cast(o: np.ndarray, d: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays (R, 3) origins ``o`` and unit directions ``d``.

    Returns (t (R,) ray distance or inf, points (R, 3), shaded colour (R, 3)).
    """
    best_t = np.full(len(o), np.inf)
    best_n = np.zeros_like(o)
    best_id = np.full(len(o), -1)
    for obj, fn in _objects(kind):
        t, n = fn(o, d)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_n = np.where(closer[:, None], n, best_n)
        best_id = np.where(closer, obj, best_id)
    hit = np.isfinite(best_t)
    p = o + d * np.where(hit, best_t, 0)[:, None]
    colour = np.zeros_like(o)
    for obj in np.unique(best_id[hit]):
        sel = best_id == obj
        shade = AMBIENT + DIFFUSE * np.maximum(0.0, best_n[sel] @ LIGHT)
        colour[sel] = _albedo(int(obj), p[sel]) * shade[:, None]
    return best_t, p, np.clip(colour, 0, 1)


# ----------------------------------------------------------------------------- cameras and rendering


def make_cameras(n_views: int, width: int, height: int, kind: str = "orbit", fov_deg: float = 50.0) -> Cameras:
    """``n_views`` cameras (float64) looking at the objects: on an orbit or a forward-facing arc."""
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64)
    mats = []
    for k in range(n_views):
        if kind == "orbit":
            az = 2 * np.pi * k / n_views
            el = np.radians(25.0 if k % 2 == 0 else 40.0)
            eye = 4.0 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            target = (0.0, 0.0, 0.3)
        elif kind == "forward":
            s = k / max(n_views - 1, 1) * 2 - 1  # -1 .. 1 along the arc
            eye = np.array([1.2 * s, -3.6 + 0.3 * s * s, 1.1 + 0.25 * np.sin(3.0 * s)])
            target = (0.15 * s, 0.4, 0.45)
        else:
            raise ValueError(f"kind must be 'orbit' or 'forward', got {kind!r}")
        mats.append(look_at(eye, target, up=(0.0, 0.0, 1.0)))
    return Cameras(torch.stack(mats), K.expand(n_views, 3, 3).clone(), width, height)


def _rays(cam: Cameras, i: int, offsets: list[tuple[float, float]]):
    """World rays through the pixel positions (j + ox, i + oy) for each offset: (S, H*W, 3) each."""
    K = cam.Ks[i].numpy()
    c2w = np.linalg.inv(cam.viewmats[i].numpy())
    jj, ii = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    origins, dirs = [], []
    for ox, oy in offsets:
        x = (jj.ravel() + ox - K[0, 2]) / K[0, 0]
        y = (ii.ravel() + oy - K[1, 2]) / K[1, 1]
        d_cam = np.stack([x, y, np.ones_like(x)], axis=1)
        d = d_cam @ c2w[:3, :3].T
        dirs.append(d / np.linalg.norm(d, axis=1, keepdims=True))
        origins.append(np.broadcast_to(c2w[:3, 3], d.shape))
    return origins, dirs


def render(cameras: Cameras, kind: str, supersample: int = 2, background=(0.0, 0.0, 0.0)):
    """(images (N,H,W,3), alphas (N,H,W,1), depths (N,H,W,1)) of the scene ``kind``."""
    bg = np.asarray(background, dtype=np.float64)
    s = supersample
    offsets = [((a + 0.5) / s, (b + 0.5) / s) for b in range(s) for a in range(s)]
    H, W = cameras.height, cameras.width
    images, alphas, depths = [], [], []
    for i in range(len(cameras)):
        col, cov = np.zeros((H * W, 3)), np.zeros(H * W)
        for o, d in zip(*_rays(cameras, i, offsets)):
            t, _, c = cast(o, d, kind)
            hit = np.isfinite(t)
            col += np.where(hit[:, None], c, bg)
            cov += hit
        images.append((col / len(offsets)).reshape(H, W, 3))
        alphas.append((cov / len(offsets)).reshape(H, W, 1))
        (o,), (d,) = _rays(cameras, i, [(0.5, 0.5)])
        t, p, _ = cast(o, d, kind)
        z = (p @ cameras.viewmats[i, 2, :3].numpy() + cameras.viewmats[i, 2, 3].item())
        depths.append(np.where(np.isfinite(t), z, np.inf).reshape(H, W, 1))
    return tuple(np.stack(x).astype(np.float32) for x in (images, alphas, depths))


def sample_points(cameras: Cameras, kind: str, n_points: int, seed: int = 0):
    """(points (M, 3), colours (M, 3)) on visible surfaces: hits of random pixel rays, M <= n_points."""
    rng = np.random.default_rng(seed)
    pts, cols = [], []
    for i in range(len(cameras)):
        K = cameras.Ks[i].numpy()
        c2w = np.linalg.inv(cameras.viewmats[i].numpy())
        m = n_points // len(cameras) + (i < n_points % len(cameras))
        x = (rng.uniform(0, cameras.width, m) - K[0, 2]) / K[0, 0]
        y = (rng.uniform(0, cameras.height, m) - K[1, 2]) / K[1, 1]
        d = np.stack([x, y, np.ones(m)], 1) @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        t, p, c = cast(np.broadcast_to(c2w[:3, 3], d.shape), d, kind)
        hit = np.isfinite(t)
        pts.append(p[hit])
        cols.append(c[hit])
    return np.concatenate(pts).astype(np.float32), np.concatenate(cols).astype(np.float32)


def make_scene(
    n_views: int = 8,
    width: int = 64,
    height: int = 48,
    kind: str = "orbit",
    seed: int = 0,
    n_points: int = 2000,
    supersample: int = 1,
    background=(0.0, 0.0, 0.0),
) -> SyntheticScene:
    """Render a procedural scene from ``n_views`` cameras ("orbit" or "forward") with ground truth.

    ``seed`` drives the surface point sampling (the geometry and cameras are fixed); ``supersample``
    antialiases with s x s rays per pixel.
    """
    cams = make_cameras(n_views, width, height, kind)
    images, alphas, depths = render(cams, kind, supersample, background)
    points, colors = sample_points(cams, kind, n_points, seed)
    return SyntheticScene(
        images=images, alphas=alphas, depths=depths, cameras=cams, points=points, point_colors=colors,
        background=np.asarray(background, dtype=np.float32), kind=kind,
    )
