"""The pose stage of ``reconstruct``: what the pipeline calls, so its own edits stay a few lines.

    scene, posed = estimate_if_needed(cfg, scene, log)     # photos without poses, or --poses estimate
    trainer.camera_hook = make_refiner(cfg, posed, n, dev)  # pose refinement while training (or None)
    cams = evaluation_cameras(cfg, posed, model, ...)       # test-time pose alignment of the test views
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.fileio import atomic_path

from .colmap_sfm import FeatureConfig
from .estimate import PoseConfig
from .refine import PoseRefiner, align_test_pose
from .scene_poses import PosedScene, pose_scene


def wants_estimate(cfg, scene) -> bool:
    return cfg.poses == "estimate" or (cfg.poses == "auto" and not scene.poses_known)


def pose_config(cfg) -> PoseConfig:
    """The pose estimation settings a command's options ask for (``matcher_model``: a learned matcher)."""
    return PoseConfig(features=FeatureConfig(matcher_model=getattr(cfg, "matcher_model", None)),
                      log_file=Path(cfg.out) / COLMAP_LOG)


COLMAP_LOG = "logs/colmap.log"  # in the run folder: COLMAP's full log, kept out of the terminal
ESTIMATE_FILE = "checkpoints/poses_estimate.pt"  # in the run folder: a resumed run reuses the same frame


def estimate_if_needed(cfg, scene, log: Callable[[str], None]):
    """(scene, PosedScene or None): the scene with estimated training cameras when asked or needed.

    The estimate is saved in the run folder; ``--resume`` reuses it, since the checkpoints live in its frame
    (a new estimate could differ by a similarity)."""
    if not wants_estimate(cfg, scene):
        return scene, None
    cache = Path(cfg.out) / ESTIMATE_FILE
    previous = None
    if cfg.resume and cache.is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=False)
            if saved["names"] == [scene.names[i] for i in scene.train_ids]:
                previous = saved["estimate"]
                log(f"poses: reusing the estimate saved in {cache}")
            else:
                log(f"poses: {cache} is for other photos; estimating again")
        except Exception as e:  # an unreadable cache costs a re-estimate, never the run
            log(f"poses: could not read {cache} ({e}); estimating again")
    posed = pose_scene(scene, pose_config(cfg), log=log, estimate=previous)
    if previous is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            torch.save({"names": [scene.names[i] for i in scene.train_ids], "estimate": posed.estimate}, tmp)
    if posed.errors is not None:
        e = posed.errors
        log(f"estimated vs given poses (Sim(3)-aligned): median rotation {e['median_rotation_deg']:.2f} deg, "
            f"median centre {e['median_centre_pct']:.2f}% of the camera extent")
    return posed.scene, posed


def make_refiner(cfg, posed: PosedScene | None, n_views: int, device) -> PoseRefiner | None:
    on = cfg.refine_poses if cfg.refine_poses is not None else posed is not None
    if not on:
        return None
    return PoseRefiner(n_views, lr_rot=cfg.pose_lr, lr_trans=cfg.pose_lr, start=cfg.pose_refine_start,
                       device=device)


def refined_cameras(refiner: PoseRefiner | None, cams_norm: Cameras, train_ids: list[int]) -> Cameras | None:
    """All cameras (normalized frame) with the training views' refinements applied, or None."""
    if refiner is None:
        return None
    V = cams_norm.viewmats.detach().clone()
    V[train_ids] = refiner.cameras(cams_norm[train_ids]).viewmats.to(V)
    return replace(cams_norm, viewmats=V)


def evaluation_cameras(cfg, posed: PosedScene | None, model, scene, cams_norm: Cameras, test_ids: list[int],
                       log: Callable[[str], None]) -> Cameras:
    """The cameras to render test views with: with estimated poses, each test pose (mapped from the
    reference frame by the training views' Sim(3)) is fitted to its photo with the scene frozen."""
    if posed is None or not test_ids or cfg.test_pose_steps <= 0:
        return cams_norm
    V = cams_norm.viewmats.detach().clone()
    prims = model.activated()
    bg = scene.background.to(V.device)
    for i in test_ids:
        cam = align_test_pose(prims, cams_norm[i], scene.images[i].to(V.device), bg, steps=cfg.test_pose_steps,
                              backend=cfg.train.backend)
        V[i] = cam.viewmats[0]
    log(f"test-time pose alignment: {len(test_ids)} test views, {cfg.test_pose_steps} steps each")
    return replace(cams_norm, viewmats=V)
