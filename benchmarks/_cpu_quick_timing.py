"""Quick timing of the C++/OpenMP backend (not a test): 100k Gaussians at 512x512 and 800x800.

Run: .venv/bin/python benchmarks/_cpu_quick_timing.py [--n 100000] [--torch]
The scene is a random cloud in front of the camera (scales ~0.5-4% of its size, opacities 0.05-1),
roughly what a trained scene's Gaussian sizes look like on screen. Prints median times over a few runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(os.path.dirname(__file__), "..", ".torch_extensions"))

from sparsesplat.rasterizer.backends import cpu  # noqa: E402
from sparsesplat.rasterizer.cameras import intrinsics, look_at  # noqa: E402


def scene(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([1.5, 1.5, 1.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(-5.3, -3.2, generator=g))  # 0.005 .. 0.04
    opac = torch.empty(n).uniform_(0.05, 1.0, generator=g)
    colors = torch.rand(1, n, 3, generator=g)
    return means, quats, scales, opac, colors


def camera(w: int, h: int):
    vm = look_at((0.0, -4.0, 0.5), (0.0, 0.0, 0.0))[None].float()
    K = intrinsics(0.9 * w, 0.9 * w, w / 2, h / 2)[None].float()
    return vm, K


def timeit(fn, reps: int) -> float:
    fn()  # warm-up (and first-use build)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    means, quats, scales, opac, colors = scene(args.n)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for w, h in [(512, 512), (800, 800)]:
        vm, K = camera(w, h)

        def fwd():
            with torch.no_grad():
                P = cpu.project_gaussians(means, quats, scales, opac, vm, K, w, h)
                return cpu.rasterize(P.means2d, P.conics, colors, P.opacities, P.depths, P.radii, w, h)

        def fwd_bwd():
            ps = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
            P = cpu.project_gaussians(*ps[:4], vm, K, w, h)
            feats, alphas, _ = cpu.rasterize(P.means2d, P.conics, ps[4], P.opacities, P.depths, P.radii, w, h)
            (feats.sum() + alphas.sum()).backward()

        with torch.no_grad():
            P = cpu.project_gaussians(means, quats, scales, opac, vm, K, w, h)
            vis = int((P.radii > 0).all(-1).sum())
            feats, alphas, _ = cpu.rasterize(P.means2d, P.conics, colors, P.opacities, P.depths, P.radii, w, h)
        tf = timeit(fwd, args.reps)
        tb = timeit(fwd_bwd, args.reps)
        print(f"{args.n} Gaussians ({vis} visible) at {w}x{h}: forward {tf * 1e3:.1f} ms, "
              f"forward+backward {tb * 1e3:.1f} ms, mean alpha {alphas.mean():.3f}")


if __name__ == "__main__":
    main()
