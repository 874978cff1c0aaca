"""Put estimated poses into a ``SceneData``: the bridge between ``estimate_poses`` and the pipeline.

``pose_scene`` estimates the cameras of the TRAINING views only (test views never inform the estimate),
keeps the registered ones, and returns a scene in the SfM frame whose training cameras are the estimates and
whose SfM points are the sparse model. When the input also had poses (a benchmark treating a posed dataset
as unposed), the similarity from the estimated to the reference frame is fitted on the registered training
views and the reference test cameras are mapped into the SfM frame with its inverse, so novel views can be
rendered and compared (``refine.align_test_pose`` then fits each test pose to its photo).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from sparsesplat.datasets import SceneData
from sparsesplat.rasterizer import Cameras

from .align import Sim3, align_cameras, pose_errors
from .estimate import PoseConfig, PoseEstimate, estimate_poses


@dataclass
class PosedScene:
    """The scene with estimated cameras, and how they relate to the input.

    Attributes:
        scene: registered training views (+ test views mapped into the SfM frame when references exist),
            cameras in the SfM frame, ``points`` the sparse SfM points.
        estimate: what ``estimate_poses`` returned (indices refer to the input's training views).
        to_reference: similarity SfM frame -> the input's frame, when the input had poses; else None.
        errors: pose errors of the training views against the input's poses (``align.pose_errors``), or None.
    """

    scene: SceneData
    estimate: PoseEstimate
    to_reference: Sim3 | None
    errors: dict | None

    def summary(self) -> dict:
        """What metrics.json records about the estimate."""
        e = self.estimate
        out = {"method": e.method, "tried": e.tried, "registered": len(e.registered),
               "dropped": len(e.dropped), "sparse_points": len(e.points), "seconds": e.seconds,
               "focal_px": float(np.median(e.Ks[:, 0, 0])),
               "unlinked_pairs": [list(p) for p in e.unlinked], "conflicting_pairs": [list(p) for p in e.conflicts]}
        if self.errors is not None:
            out.update({k: v for k, v in self.errors.items() if k.startswith(("median", "max"))})
        return out


def _cameras(V: np.ndarray, K: np.ndarray, like: Cameras) -> Cameras:
    return Cameras(torch.as_tensor(V, dtype=like.viewmats.dtype), torch.as_tensor(K, dtype=like.Ks.dtype),
                   like.width, like.height)


def pose_scene(scene: SceneData, cfg: PoseConfig | None = None, log: Callable[[str], None] = print,
               estimate: PoseEstimate | None = None) -> PosedScene:
    """Estimate the training views' poses and return the scene re-expressed in the estimated frame
    (``estimate``: a previous estimate of the same views to reuse, e.g. when a run resumes)."""
    train = list(scene.train_ids)
    names = [scene.names[i] for i in train]
    if estimate is None:
        images = scene.images[train].numpy()
        Ks = scene.cameras.Ks[train].double().numpy()
        est = estimate_poses(images, Ks, names, scene.focal_is_guess, cfg, log=log)
        if cfg is not None and cfg.log_file is not None:
            log(f"poses: COLMAP's full log is in {cfg.log_file}")
    else:
        est = estimate
    log(est.message(names))
    reg = [train[k] for k in est.registered]
    keep = reg + list(scene.test_ids)
    sub = scene.subset(keep)
    V = np.tile(np.eye(4), (len(keep), 1, 1))
    K = sub.cameras.Ks.double().numpy().copy()
    V[: len(reg)] = est.viewmats
    K[: len(reg)] = est.Ks
    to_ref, errors = None, None
    if scene.poses_known:
        ref = scene.cameras.viewmats.double().numpy()
        to_ref = align_cameras(est.viewmats, ref[reg])
        errors = pose_errors(est.viewmats, ref[reg])
        if scene.test_ids:
            inv = Sim3(1.0 / to_ref.scale, to_ref.R.T, -to_ref.R.T @ to_ref.t / to_ref.scale)
            V[len(reg):] = inv.apply_viewmats(ref[scene.test_ids])
    elif scene.test_ids:
        sub = scene.subset(reg)
        V, K = V[: len(reg)], K[: len(reg)]
    posed = replace(sub, cameras=_cameras(V, K, sub.cameras), points=est.points.astype(np.float32),
                    point_colors=est.colors.astype(np.float32), poses_known=True)
    return PosedScene(scene=posed, estimate=est, to_reference=to_ref, errors=errors)
