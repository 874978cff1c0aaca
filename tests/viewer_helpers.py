"""A small, crisp scene and a run folder written with the project's own writers, for the viewer tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from sparsesplat.rasterizer import Cameras, Gaussians
from sparsesplat.rasterizer.cameras import intrinsics, look_at
from sparsesplat.rasterizer.kinds.gaussian.ply import save_gaussians_ply
from sparsesplat.rasterizer.sh import rgb_to_sh0
from sparsesplat.recon.export import write_cameras_json, write_colmap_text

NAMES = [f"view{i}.png" for i in range(5)]


def ball_scene(n: int = 800, seed: int = 0) -> Gaussians:
    """Opaque Gaussians on a unit sphere at the origin, coloured by direction (so views differ)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    colors = (0.5 + 0.45 * d).clamp(0, 1)
    sh = rgb_to_sh0(colors)[:, None, :]
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.full((n, 3), 0.13, dtype=torch.float64)
    opac = torch.full((n,), 0.95, dtype=torch.float64)
    return Gaussians(d.float(), quats.float(), scales.float(), opac.float(), sh=sh.float())


def ring_cameras(n: int = 5, width: int = 80, height: int = 60, radius: float = 4.0) -> Cameras:
    """n cameras on a ring around the origin (z up), looking at it; centred principal point."""
    views, Ks = [], []
    f = 0.9 * width
    for k in range(n):
        a = 2 * np.pi * k / n + 0.4
        eye = [radius * np.cos(a), radius * np.sin(a), 1.2]
        views.append(look_at(eye, [0.0, 0.0, 0.0]))
        Ks.append(intrinsics(f, f, width / 2, height / 2))
    return Cameras(torch.stack(views).float(), torch.stack(Ks).float(), width, height)


def make_run_folder(path: Path, photos: Path | None = None) -> dict:
    """A run folder as `reconstruct` writes it: scene.ply, cameras.json, sparse/0, config.yaml, metrics.json.

    With ``photos`` (a folder) a photos scene is written there (one solid-colour PNG per camera) and
    config.yaml points to it. Returns the pieces written.
    """
    path.mkdir(parents=True, exist_ok=True)
    g, cams = ball_scene(), ring_cameras()
    save_gaussians_ply(path / "scene.ply", g)
    write_cameras_json(path / "cameras.json", NAMES, cams)
    pts = np.random.default_rng(1).normal(size=(50, 3))
    cols = np.random.default_rng(2).uniform(size=(50, 3))
    write_colmap_text(path, NAMES, cams, pts, cols)
    (path / "metrics.json").write_text(json.dumps({"test_views": [NAMES[0]]}))
    photo_colors = []
    if photos is not None:
        photos.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(NAMES):
            c = np.array([40 * i + 20, 200 - 30 * i, 90], dtype=np.uint8)
            Image.fromarray(np.broadcast_to(c, (cams.height, cams.width, 3)).copy()).save(photos / name)
            photo_colors.append(c)
    cfg = {"data": str(photos) if photos is not None else str(path / "missing"), "format": "photos"}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return {"gaussians": g, "cameras": cams, "points": pts, "colors": cols, "photo_colors": photo_colors}
