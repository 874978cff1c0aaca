"""The CPU backend's tile lists (csrc/cpu/tiles.h ``bin_tiles`` with the Gaussians' row and run masks), read from
the binning that ``rasterize_fwd`` hands to the backward: front to back in (depth, index) order, a tile listed only
where the Gaussian can be seen in it, masks that hold every row (and run of a row) where it can, and the same lists
for any thread count. The reference is a per-pixel float64 evaluation of each Gaussian's alpha (DESIGN.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsesplat.rasterizer.build import BackendUnavailable, load_extension

TILE = 16
ALPHA_MIN = 1.0 / 255.0


@pytest.fixture(scope="module")
def ext():
    try:
        return load_extension("cpu")
    except BackendUnavailable as exc:
        pytest.skip(f"the C++ backend cannot be built here: {str(exc).splitlines()[0]}")


def conic_of(sx: float, sy: float, angle: float) -> np.ndarray:
    """Inverse of the 2D covariance R diag(sx^2, sy^2) R^T as (a, b, c)."""
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    inv = np.linalg.inv(R @ np.diag([sx * sx, sy * sy]) @ R.T)
    return np.array([inv[0, 0], inv[0, 1], inv[1, 1]])


def radii_of(conic: np.ndarray, opacity: float) -> np.ndarray:
    """The projection's opacity-aware radius: sqrt(2 ln(255 o)) standard deviations per axis."""
    a, b, c = conic
    det = a * c - b * b
    reach = np.sqrt(2 * np.log(max(255 * opacity, 1.0)))
    return np.ceil(reach * np.sqrt(np.array([c / det, a / det]))).astype(np.int32)


def binning(ext, means2d, conics, opacities, depths, W, H):
    """(offsets, ids, rows) of one camera's render: the tile lists and each pair's row mask."""
    N = len(means2d)
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)[None].contiguous()
    radii = torch.tensor(np.stack([radii_of(c, o) for c, o in zip(conics, opacities)]))[None].contiguous()
    colors = torch.full((1, N, 3), 0.5)
    out = ext.rasterize_fwd(f32(means2d), f32(conics), colors, f32(opacities), f32(depths), radii, W, H, TILE,
                            torch.empty(0))
    offsets, ids, rows = out[3], out[4], out[5]
    return offsets.numpy(), ids.numpy(), rows.numpy().view(np.uint32)


def seen_pixels(mean2d, conic, opacity, W, H, alpha_min=ALPHA_MIN) -> np.ndarray:
    """(H, W) bool: the pixels (centres) where the Gaussian's alpha reaches alpha_min."""
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    dx, dy = jj - mean2d[0], ii - mean2d[1]
    a, b, c = conic
    s = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    return np.minimum(0.99, opacity * np.exp(-s)) >= alpha_min


def mask_runs(ext) -> int:
    """How many runs of a 16-pixel tile row the masks tell apart: one bit per (run of the build's lane blocks'
    width, row), bit run * 16 + row, where that fits 32 bits (gaussian_rasterize.cpp ``mask_runs``), else one per
    row."""
    runs = TILE // ext.run_width()
    return runs if TILE * runs <= 32 else 1


def tiles_seen(seen: np.ndarray) -> set[int]:
    """The tiles (row-major) holding a pixel of ``seen``."""
    H, W = seen.shape
    tiles_x, tiles_y = -(-W // TILE), -(-H // TILE)
    return {ty * tiles_x + tx for ty in range(tiles_y) for tx in range(tiles_x)
            if seen[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE].any()}


def test_a_thin_diagonal_gaussian_is_listed_only_where_it_can_be_seen(ext):
    W = H = 128
    conic = conic_of(30.0, 0.6, np.pi / 4)  # a long, thin stroke along the diagonal
    offsets, ids, rows = binning(ext, [[64.0, 64.0]], [conic], [0.9], [2.0], W, H)
    seen = seen_pixels([64.0, 64.0], conic, 0.9, W, H)
    tiles_x = W // TILE
    r = radii_of(conic, 0.9)
    bbox_tiles = int(np.ceil((64 + r[0]) / TILE) - np.floor((64 - r[0]) / TILE)) ** 2
    listed = {t for t in range(len(offsets) - 1) if offsets[t + 1] > offsets[t]}
    runs = mask_runs(ext)
    run_w = TILE // runs
    for t in range(tiles_x * tiles_x):
        ty, tx = divmod(t, tiles_x)
        block = seen[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE]
        if block.any():
            assert t in listed, f"tile {t} shows the Gaussian but does not list it"
            mask = int(rows[offsets[t]])
            for run in range(runs):  # the columns run * run_w .. (run + 1) * run_w - 1 of the tile
                for row in np.nonzero(block[:, run * run_w:(run + 1) * run_w].any(1))[0]:
                    assert mask >> (run * TILE + int(row)) & 1, (
                        f"tile {t}: row {row}, run {run} shows the Gaussian but its mask {mask:#x} lacks it")
            # and hardly more: the spans' margins add a few pixels at the stroke's ends
            cells = sum(int(block[:, run * run_w:(run + 1) * run_w].any(1).sum()) for run in range(runs))
            assert bin(mask).count("1") <= cells + 2, f"tile {t}: mask {mask:#x} for {cells} (row, run) cells seen"
    seen_tiles = tiles_seen(seen)
    # the bounding box spans the whole image; the stroke crosses a diagonal band of it
    assert bbox_tiles >= 49 and len(listed) <= len(seen_tiles) + 4
    assert all(ids[offsets[t]] == 0 and rows[offsets[t]] != 0 for t in listed)


def test_lists_are_front_to_back_with_ties_in_index_order(ext):
    W, H = 64, 48
    rng = np.random.default_rng(3)
    N = 60
    means2d = rng.uniform([8, 8], [56, 40], (N, 2))
    conics = np.stack([conic_of(*rng.uniform(3, 9, 2), rng.uniform(0, np.pi)) for _ in range(N)])
    opacities = rng.uniform(0.3, 0.9, N)
    depths = rng.choice([1.0, 2.0, 2.5, 3.0], N)  # many ties
    offsets, ids, _ = binning(ext, means2d, conics, opacities, depths.astype(np.float32), W, H)
    d32 = depths.astype(np.float32)
    n_pairs = 0
    for t in range(len(offsets) - 1):
        lst = ids[offsets[t]:offsets[t + 1]]
        keys = list(zip(d32[lst], lst))
        assert keys == sorted(keys), f"tile {t} is not in (depth, index) order: {keys}"
        n_pairs += len(lst)
    assert n_pairs > N  # the Gaussians span several tiles each


def test_lists_do_not_depend_on_the_thread_count(ext):
    W, H = 200, 150  # partial tiles at the right and bottom borders
    rng = np.random.default_rng(5)
    N = 3000
    means2d = rng.uniform([-20, -20], [220, 170], (N, 2))
    conics = np.stack([conic_of(*rng.uniform(0.5, 20, 2), rng.uniform(0, np.pi)) for _ in range(N)])
    opacities = rng.uniform(0.05, 0.99, N)
    depths = rng.uniform(1, 5, N).round(2)  # ties
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(binning(ext, means2d, conics, opacities, depths, W, H))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    # a Gaussian is listed in every tile where it can be seen, and only there (up to the row spans' margins)
    offsets, ids, rows = results[0]
    assert (rows != 0).all()
    listed = {n: set() for n in range(N)}
    for t in range(len(offsets) - 1):
        for n in ids[offsets[t]:offsets[t + 1]]:
            listed[int(n)].add(t)
    for n in range(0, N, 15):
        seen = tiles_seen(seen_pixels(means2d[n], conics[n], opacities[n], W, H))
        near = tiles_seen(seen_pixels(means2d[n], conics[n], opacities[n], W, H, 0.9 * ALPHA_MIN))
        assert seen <= listed[n] <= near, f"Gaussian {n}: seen in {sorted(seen)}, listed in {sorted(listed[n])}"
