"""Cost of one pseudo-view refresh's repair and of the depth prior, per image, with tiny random models
(the real weights cannot be downloaded here; a real SD-Turbo / Depth Anything costs far more per image).

    python -m sparsesplat.benchmarks.priors_cost                  # fern size (504x378), 9 pseudo views
    python -m sparsesplat.benchmarks.priors_cost --size 400 400 --views 24

Writes benchmarks/results/priors_cost.json and prints a table. Times are medians of ``--repeats`` calls
after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, lazy initialization)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", nargs=2, type=int, default=[504, 378], metavar=("W", "H"))
    ap.add_argument("--views", type=int, default=9, help="pseudo views per refresh (3 per training view for llff3)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=128,
                    help="diffusion tile in pixels; the tiny VAE downsamples by 2 (SD: 8), so 128-px tiles give its "
                         "attention layers the token count SD has on 512-px tiles (larger tiles explode quadratically)")
    args = ap.parse_args()
    from sparsesplat.priors.depth import TransformersDepthPrior
    from sparsesplat.priors.repair import DiffusionRepairer, SceneRepairer
    from sparsesplat.priors.testing import make_tiny_dpt, make_tiny_img2img

    W, H = args.size
    g = torch.Generator().manual_seed(0)
    renders = torch.rand(args.views, H, W, 3, generator=g)
    refs = torch.rand(args.views, H, W, 3, generator=g)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        sd = make_tiny_img2img(Path(tmp) / "sd")
        dpt = make_tiny_dpt(Path(tmp) / "dpt")
        t0 = time.perf_counter()
        diff = DiffusionRepairer(str(sd), tile=args.tile, overlap=args.tile // 8)
        rows["diffusion: load (tiny pipeline)"] = time.perf_counter() - t0
        rows["diffusion repair, with reference view"] = _time(lambda: diff.repair(renders, refs), args.repeats)
        diff.use_reference = False
        rows["diffusion repair, no reference"] = _time(lambda: diff.repair(renders, refs), args.repeats)
        scene = SceneRepairer()
        rows["scene repairer (U-Net width 16)"] = _time(lambda: scene.repair(renders, refs), args.repeats)
        depth = TransformersDepthPrior(str(dpt))
        rows["depth prior (tiny DPT), no cache"] = _time(lambda: depth(renders), args.repeats)
    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"{platform.machine()} CPU, {os.cpu_count()} cores"
    result = {"machine": machine, "torch": torch.__version__, "size": [W, H], "views": args.views, "tile": args.tile,
              "seconds_per_refresh": rows, "seconds_per_view": {k: v / args.views for k, v in rows.items()
                                                                if not k.endswith("(tiny pipeline)")}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "priors_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{machine}, {args.views} views of {W}x{H}")
    for k, v in rows.items():
        per = "" if k.endswith("(tiny pipeline)") else f"  ({1000 * v / args.views:.0f} ms per view)"
        print(f"  {k:45s} {v:7.2f} s{per}")


if __name__ == "__main__":
    main()
