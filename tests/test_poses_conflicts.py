"""Views joined the wrong way round (recon.poses.conflicts): the check on models with known geometry, the
removal of wrong links from a real COLMAP database, and the estimate's re-mapping loop."""

from __future__ import annotations

import numpy as np
import pytest

import sparsesplat.recon.poses.estimate as estimate_mod
from sparsesplat.datasets.synthetic import make_scene
from sparsesplat.recon.poses.colmap_sfm import FeatureConfig, build_database, read_matches
from sparsesplat.recon.poses.conflicts import ConflictConfig, conflicting_pairs, remove_pairs
from sparsesplat.recon.poses.estimate import PoseConfig, estimate_poses

W, H = 320, 240
K = np.array([[300.0, 0, W / 2], [0, 300.0, H / 2], [0, 0, 1]])


def _look_at(C: np.ndarray) -> np.ndarray:
    f = -C / np.linalg.norm(C)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    V = np.eye(4)
    V[:3, :3] = np.stack([r, d, f])
    V[:3, 3] = -V[:3, :3] @ C
    return V


def _ring(n_views=24, n_points=4000, keep=0.7, seed=0):
    """Cameras on a circle around a unit sphere of points; each view observes the points on its side of the
    sphere (inside its image), each observation kept with probability ``keep`` (matching is never complete)."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n_points, 3))
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    angles = np.linspace(0, 2 * np.pi, n_views, endpoint=False)
    V = np.stack([_look_at(4.0 * np.array([np.cos(a), np.sin(a), 0.3])) for a in angles])
    obs = []
    for v in V:
        C = -v[:3, :3].T @ v[:3, 3]
        X = P @ v[:3, :3].T + v[:3, 3]
        uv = X[:, :2] / X[:, 2:] @ K[:2, :2].T + K[:2, 2]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        facing = np.einsum("ij,ij->i", P, C - P) > 0.05  # the near side of the sphere only
        obs.append(np.flatnonzero(inside & facing & (rng.random(n_points) < keep)))
    return V, np.tile(K, (n_views, 1, 1)), P, obs


def _turned(V: np.ndarray, views, degrees=180.0) -> np.ndarray:
    """The model's mistake on symmetric structure: ``views`` (with what they observe) placed after a turn of
    the world about the vertical axis, i.e. on the other side of the object."""
    a = np.radians(degrees)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    out = V.copy()
    for v in views:
        out[v, :3, :3] = V[v, :3, :3] @ Rz.T  # centre turned by Rz, orientation with it; t unchanged
    return out


def test_a_consistent_model_has_no_conflicts_and_its_close_pairs_are_checked():
    V, Ks, P, obs = _ring()
    assert conflicting_pairs(V, Ks, W, H, P, obs) == []
    # the close pairs are really examined: asking for more sharing than partial matching gives flags each
    # neighbouring pair (15 degrees apart, within the 25-degree window) and no farther one
    strict = conflicting_pairs(V, Ks, W, H, P, obs, ConflictConfig(min_shared=0.95))
    assert len(strict) == 24 and all((b - a) in (1, 23) for a, b in strict)


def test_views_placed_on_the_wrong_side_conflict_with_the_views_they_were_placed_beside():
    V, Ks, P, obs = _ring()
    moved = [3, 4, 5]
    wrong = _turned(V, moved)
    pairs = conflicting_pairs(wrong, Ks, W, H, P, obs)
    assert pairs, "no conflict found for views placed on the wrong side"
    for a, b in pairs:  # every conflict joins a moved view to a view of the far side, where they now sit
        assert (a in moved) != (b in moved)
        other = b if a in moved else a
        assert 13 <= other <= 19, (a, b)
    assert {v for p in pairs for v in p} >= set(moved)
    # too little evidence is not a conflict
    assert conflicting_pairs(wrong, Ks, W, H, P, obs, ConflictConfig(min_points=10_000)) == []


def test_a_small_wrong_turn_is_not_called_a_conflict_when_views_still_share_points():
    V, Ks, P, obs = _ring()
    assert conflicting_pairs(_turned(V, [3, 4, 5], degrees=3.0), Ks, W, H, P, obs) == []


@pytest.fixture(scope="module")
def forward_db(tmp_path_factory):
    scene = make_scene(5, 256, 192, "forward", n_points=10)
    work = tmp_path_factory.mktemp("sfm")
    cfg = FeatureConfig(affine=False, domain_size_pooling=False)
    db, _, _ = build_database(scene.images, scene.cameras.Ks.numpy(), False, work, cfg)
    return scene, db


def test_remove_pairs_deletes_the_verified_matches_from_the_database(forward_db):
    scene, db = forward_db
    _, before = read_matches(db, 5)
    pair = max(before, key=lambda p: len(before[p]))
    cache = dict(before)
    removed = remove_pairs(db, [pair[::-1], (0, 0)], cache)  # any order; a pair that does not exist is skipped
    assert removed == [pair]
    _, after = read_matches(db, 5)
    assert pair not in after and pair not in cache
    assert set(after) == set(before) - {pair}


def test_estimate_removes_the_links_of_conflicting_views_and_maps_again(monkeypatch):
    scene = make_scene(5, 256, 192, "forward", n_points=10)
    calls = []

    def fake_conflicts(model, width, height, cfg=None):  # the first model "contradicts itself" once
        calls.append(len(model.view_ids))
        return [(1, 2)] if len(calls) == 1 else []

    monkeypatch.setattr(estimate_mod, "model_conflicts", fake_conflicts)
    logs = []
    est = estimate_poses(scene.images, scene.cameras.Ks.numpy(), [f"v{i}.png" for i in range(5)],
                         cfg=PoseConfig(features=FeatureConfig(affine=False, domain_size_pooling=False)),
                         log=logs.append)
    assert len(calls) == 2  # mapped, checked, unlinked, mapped again, checked
    assert est.unlinked == ((1, 2),) and est.conflicts == ()
    assert any("v1.png~v2.png" in line and "mapping again" in line for line in logs)
    assert "1 wrong links removed" in est.message([f"v{i}.png" for i in range(5)])
    assert est.registered == [0, 1, 2, 3, 4]  # the other links still join views 1 and 2

