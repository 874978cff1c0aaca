"""The pose stage of ``reconstruct``: what the pipeline calls, so its own edits stay a few lines.

    scene, posed = estimate_if_needed(cfg, scene, log)     # photos without poses, or --poses estimate
    trainer.camera_hook = make_refiner(cfg, posed, n, dev)  # pose refinement while training (or None)
    cams = evaluation_cameras(cfg, posed, model, ...)       # test-time pose alignment of the test views
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from sparsesplat.rasterizer import Cameras

from .refine import PoseRefiner, align_test_pose
from .scene_poses import PosedScene, pose_scene


def wants_estimate(cfg, scene) -> bool:
    return cfg.poses == "estimate" or (cfg.poses == "auto" and not scene.poses_known)


def estimate_if_needed(cfg, scene, log: Callable[[str], None]):
    """(scene, PosedScene or None): the scene with estimated training cameras when asked or needed."""
    if not wants_estimate(cfg, scene):
        return scene, None
    posed = pose_scene(scene, log=log)
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
