"""``sparsesplat poses photos/ -o RUN``: only the pose stage, for other tools.

Writes, in the estimated (SfM) frame, which is the user's frame for photos without poses:
``cameras.json``, ``transforms.json``, ``sparse/0/`` (COLMAP text: cameras, images, the sparse points),
``points.ply`` (the initial point cloud: sparse SfM points, plus rectified-stereo points by default or the
monocular depth model's points with ``--points mono-depth``)
and ``poses.json`` (which path registered which views, timings, and errors against the scene's own poses
when it had them).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import numpy as np
import tyro

from ..scene_input import SceneInput
from .learned_init import DEFAULT_DEPTH_MODEL


@dataclass
class PosesCommand(SceneInput):
    """Estimate camera poses (and an initial point cloud) from photos without camera files."""

    points: Literal["dense", "sparse", "mono-depth"] = "dense"
    """points.ply: dense (the sparse SfM points plus rectified-stereo points between neighbouring views; slower),
    sparse (the SfM points alone: few at 3 views) or mono-depth (the sparse points plus the --depth-model's
    monocular depth aligned per view to them, what ``reconstruct --init mono-depth`` does)."""
    depth_model: str = DEFAULT_DEPTH_MODEL
    """--points mono-depth: a transformers depth-estimation model, local folder or hub id (reconstruct's
    default too)."""
    matcher_model: Annotated[Optional[str], tyro.conf.arg(metavar="MODEL")] = None
    """Learned feature matcher (transformers SuperPoint+LightGlue or SuperGlue: a local folder or a hub id such
    as ETH-CVG/lightglue_superpoint) used beside SIFT: matches across wide baselines (360-degree photo sets)."""

    def run(self) -> int:
        from sparsesplat.rasterizer.ply import save_points_ply

        from ..export import write_cameras_json, write_colmap_text, write_transforms_json
        from ..io import write_json
        from .initializer import LAST_STATS, dense_initializer
        from .scene_poses import pose_scene
        from .stage import pose_config

        if self.out.exists() and any(self.out.iterdir()):
            if not self.overwrite:
                raise ValueError(f"output folder {self.out} already exists; pass --overwrite to replace it")
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        scene = self.load()
        print(scene.summary())
        scene = scene.subset(scene.train_ids)  # test views take no part
        posed = pose_scene(scene, pose_config(self), log=print)
        s = posed.scene
        pts, cols = s.points, s.point_colors
        if self.points == "mono-depth":
            from .learned_init import mono_depth_points, mono_depth_summary

            pts, cols, st = mono_depth_points(s, s.train_ids, self.depth_model, cache_dir=self.out / "depth")
            print(f"monocular-depth initialization: {mono_depth_summary(st, len(pts))}")
        elif self.points == "dense":
            print("poses: dense stereo between neighbouring views...", flush=True)
            pts, cols = dense_initializer(s, s.train_ids)
            print(f"dense initialization: {LAST_STATS.get('sparse', 0)} sparse + {LAST_STATS.get('dense', 0)} "
                  f"stereo points")
        write_cameras_json(self.out / "cameras.json", s.names, s.cameras, focal_is_guess=s.focal_is_guess)
        write_transforms_json(self.out / "transforms.json", s.names, s.cameras)
        write_colmap_text(self.out, s.names, s.cameras, s.points, s.point_colors)
        save_points_ply(self.out / "points.ply", np.asarray(pts, np.float32), np.asarray(cols, np.float32))
        report = {**posed.summary(), "names": s.names,
                  "dropped_names": [scene.names[i] for i in posed.estimate.dropped],
                  "points": len(pts), "total_seconds": time.time() - t0}
        write_json(report, self.out / "poses.json")
        print(f"{len(s.names)} cameras and {len(pts)} points written to {self.out}")
        return 0
