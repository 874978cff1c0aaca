"""The held-out ceiling benchmark's reprojection (benchmarks/held_out_ceiling.py) against ray-cast ground truth."""

from __future__ import annotations

import numpy as np
import torch

from sparsesplat.benchmarks.held_out_ceiling import copy_photo_colors, surface_points
from sparsesplat.datasets import synthetic


def _views(n=4, w=96, h=72):
    cams = synthetic.make_cameras(n, w, h, "orbit")
    img, alpha, depth = synthetic.render(cams, "orbit", supersample=1)
    depth = np.where(np.isfinite(depth), depth, 0.0)
    return cams, torch.from_numpy(img).float(), torch.from_numpy(alpha)[..., 0], torch.from_numpy(depth)[..., 0].double()


def _sources(cams, img, depth, ids, depth_scale=1.0):
    return [(img[s], depth[s] * depth_scale, cams.Ks[s].double(), cams.viewmats[s].double()) for s in ids]


def test_copying_the_training_photos_at_the_true_surface_reproduces_a_held_out_view():
    cams, img, alpha, depth = _views()
    test, train = 0, [1, 2, 3]
    keep = (alpha[test] > 0.99) & (depth[test] > 0)
    points, (v, u) = surface_points(depth[test], cams.Ks[test].double(), cams.viewmats[test].double(), keep)
    colors, shown = copy_photo_colors(points, _sources(cams, img, depth, train), tol=0.01)
    seen = shown > 0
    # the orbit's cameras see the objects from different sides: some of view 0's surface is hidden from the others
    assert 0.3 < float(seen.float().mean()) < 1.0
    # the synthetic scene's colours do not depend on the viewpoint: where a photo shows the point, it has its colour
    # (up to the nearest pixel's offset, which on the textures and the objects' edges is another colour: the median
    # point is exact, most points are close)
    err = ((colors[seen] - img[test][v[seen], u[seen]]) ** 2).mean(-1)
    assert float(err.median()) < 1e-3 and float((err < 0.01).float().mean()) > 0.75
    assert bool(torch.isnan(colors[~seen]).all())


def test_a_point_off_the_photos_surface_counts_as_unseen():
    cams, img, alpha, depth = _views()
    test, train = 0, [1, 2, 3]
    keep = (alpha[test] > 0.99) & (depth[test] > 0)
    points, _ = surface_points(depth[test], cams.Ks[test].double(), cams.viewmats[test].double(), keep)
    _, shown = copy_photo_colors(points, _sources(cams, img, depth, train), tol=0.01)
    # the training views' surfaces 5% nearer: no point lies on them any more
    _, shown_off = copy_photo_colors(points, _sources(cams, img, depth, train, depth_scale=0.95), tol=0.01)
    assert int((shown > 0).sum()) > 100 and int((shown_off > 0).sum()) < 0.05 * int((shown > 0).sum())
