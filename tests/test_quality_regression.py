"""The DTU collapse, CI-sized: objects on a ground plane against a black sky, three training cameras 30 degrees
apart on an arc, held-out views 10 degrees beyond the arc's ends.

Before the plane-sweep initializer, SIFT found too few points on such views and training started from a
random cloud; the training views were fitted by floaters in front of the cameras that cover the held-out
views (DTU scan37 dtu3: training views 33 dB, held-out 4.7 dB). The reconstruction must generalize here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.datasets import load
from sparsesplat.datasets.synthetic import SyntheticScene, render, sample_points
from sparsesplat.datasets.writers import write_llff
from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.cameras import look_at
from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
from sparsesplat.recon.trainer import TrainConfig


def arc_scene(width: int = 160, height: int = 120, n_views: int = 9, span_deg: float = 80.0) -> SyntheticScene:
    """``n_views`` cameras on an arc of ``span_deg`` degrees at 30 degrees elevation, 4 units from the objects."""
    f = 0.5 * width / np.tan(np.radians(40) / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64)
    mats = []
    for az in np.radians(np.linspace(-span_deg / 2, span_deg / 2, n_views)) - np.pi / 2:
        el = np.radians(30)
        eye = 4.0 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        mats.append(look_at(eye, (0.0, 0.2, 0.4), up=(0.0, 0.0, 1.0)))
    cams = Cameras(torch.stack(mats), K.expand(n_views, 3, 3).clone(), width, height)
    images, alphas, depths = render(cams, "orbit", supersample=2)
    pts, cols = sample_points(cams, "orbit", 200)
    return SyntheticScene(images, alphas, depths, cams, pts, cols, np.zeros(3, np.float32), "orbit")


@pytest.fixture(scope="module")
def arc(tmp_path_factory):
    path = write_llff(tmp_path_factory.mktemp("arc") / "scene", arc_scene())
    scene = load(path, protocol="llff3")  # 9 views: test 0 and 8, train 1, 4, 7
    assert scene.train_ids and [scene.names[i] for i in scene.test_ids] == ["image000.png", "image008.png"]
    return path, scene


def _short_schedule(**kw) -> TrainConfig:
    t = TrainConfig(iters=400, sh_degree=1, sh_every=100, checkpoint_every=0, **kw)
    t.default.refine_start_iter, t.default.refine_stop_iter = 100, 300
    return t


def test_three_close_views_generalize_to_held_out_views(arc, tmp_path):
    """Defaults (init auto: plane-sweep stereo; stereo depth, dropout, binocular), a 400-step schedule.
    Measured on this scene: held-out 19.1 dB, SSIM 0.70, the objects in place (18.9 dB without the default
    depth smoothness; 18.2 dB with earlier defaults, which reached 19.0 dB in 1500 steps). From
    random points at the same schedule it collapses as DTU did: 15.9 dB, SSIM 0.37, a smear of floaters."""
    path, scene = arc
    cfg = ReconstructConfig(data=path, out=tmp_path / "run", protocol="llff3", train=_short_schedule())
    m = reconstruct(cfg, log=lambda *_: None, scene=scene)
    assert m["init_method"] == "mvs" and m["init_points"] > 5000
    assert m["psnr"] > 17.3 and m["ssim"] > 0.6, m
