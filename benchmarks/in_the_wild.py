"""Photos taken in the wild, measured on a real scene: fern llff3 whose training photos get a random exposure
and white balance each (the held-out photos stay as they are), trained with and without per-photo appearance.

    python -m sparsesplat.benchmarks.in_the_wild --settings off affine --out in_the_wild
    python -m sparsesplat.benchmarks.in_the_wild --settings affine --seed 0 --out in_the_wild_affine   # one run

Each training photo is multiplied by a gain drawn uniformly from [``--gain`` range] times a per-channel
white-balance factor from [``--white-balance`` range], then clipped to [0, 1] (seeded: the same photos for
every setting). The PSNR is of the neutral render against the unaltered test photos; ``psnr_appearance_fit``
is the in-the-wild protocol's score (each test view's colour transform fitted on its left half, scored on its
right half). The unaltered default run of the same seed is in ``train_profile.md`` (same schedule).

Results: benchmarks/results/<out>.md / .json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .results_file import write_results_md
from .sparse_views import RESULTS, SCENES, data_root

SETTINGS = {"off": {}, "affine": {"appearance": "affine"},
            "affine+robust": {"appearance": "affine", "transients": "robust"}}


def alter_photos(scene, gain: tuple[float, float], white_balance: tuple[float, float], seed: int):
    """A copy of ``scene`` whose training photos carry a random exposure and white balance each; with the
    factors drawn per photo and the share of its pixels that clipping changed (information no colour model can
    bring back)."""
    rng = np.random.default_rng(seed)
    out = copy.copy(scene)
    images = scene.images.clone()
    factors, clipped = {}, {}
    for i in scene.train_ids:
        f = rng.uniform(*gain) * rng.uniform(*white_balance, size=3)
        scaled = images[i] * torch.tensor(f, dtype=torch.float32)
        clipped[scene.names[i]] = round(float((scaled > 1).any(-1).float().mean()), 4)
        images[i] = scaled.clamp(0, 1)
        factors[scene.names[i]] = [round(float(x), 4) for x in f]
    out.images = images
    return out, factors, clipped


def run(setting: str, args, out_root: Path) -> dict:
    from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
    from sparsesplat.recon.trainer import TrainConfig

    rel, protocol = SCENES[args.scene]
    train = TrainConfig(seed=args.seed, checkpoint_every=0, **SETTINGS[setting])
    if args.iters:
        train.iters = args.iters
    cfg = ReconstructConfig(data=data_root() / rel, out=out_root / f"{args.out}_{args.scene}_{setting}_s{args.seed}",
                            protocol=protocol, overwrite=True, train=train, schedule="fast")
    scene = cfg.load()  # at the protocol's published resolution, as reconstruct would load it
    altered, factors, clipped = alter_photos(scene, tuple(args.gain), tuple(args.white_balance), args.seed)
    t0 = time.time()
    m = reconstruct(cfg, log=lambda *_: None, scene=altered)
    print(f"{args.scene} {setting}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
          + (f", fitted-look PSNR {m['psnr_appearance_fit']:.2f}" if m.get("psnr_appearance_fit") else ""), flush=True)
    return {"setting": setting, "psnr": m["psnr"], "ssim": m["ssim"], "psnr_appearance_fit": m.get("psnr_appearance_fit"),
            "train_seconds": m["train_seconds"], "wall_seconds": time.time() - t0, "factors": factors,
            "clipped": clipped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default="fern", choices=list(SCENES))
    ap.add_argument("--settings", nargs="+", default=["off", "affine"], choices=list(SETTINGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gain", type=float, nargs=2, default=[0.6, 1.4])
    ap.add_argument("--white-balance", type=float, nargs=2, default=[0.85, 1.15])
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--out", default="in_the_wild")
    args = ap.parse_args(argv)
    out_root = RESULTS / "runs"
    rows = [run(s, args, out_root) for s in args.settings]
    lines = [f"# In-the-wild photos: {args.scene} with a random exposure and white balance per training photo "
             f"({platform.machine()} CPU, {torch.get_num_threads()} threads)", "",
             f"Command: `python -m sparsesplat.benchmarks.in_the_wild --scene {args.scene} --settings "
             f"{' '.join(args.settings)} --seed {args.seed} --gain {args.gain[0]:g} {args.gain[1]:g} --white-balance "
             f"{args.white_balance[0]:g} {args.white_balance[1]:g} --out {args.out}`  ",
             f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}; gain U{tuple(args.gain)} x white balance "
             f"U{tuple(args.white_balance)} per channel, fast schedule. PSNR: neutral render vs the unaltered test "
             "photos; fitted look: each test view's colour transform fitted on its left half, PSNR on the right.",
             "", "| setting | PSNR | SSIM | fitted-look PSNR | train s |", "|---|---|---|---|---|"]
    for r in rows:
        fit = "–" if r["psnr_appearance_fit"] is None else f"{r['psnr_appearance_fit']:.2f}"
        lines.append(f"| {r['setting']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {fit} | {r['train_seconds']:.0f} |")
    clip = rows[0]["clipped"]  # every setting trains on the same altered photos
    lines += ["", "Factors drawn (R, G, B) and the share of each training photo's pixels that clipping changed: "
              + "; ".join(f"{n}: {rows[0]['factors'][n]}, {100 * c:.1f}% clipped" for n, c in clip.items()) + "."]
    write_results_md(RESULTS / f"{args.out}.md", lines)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {RESULTS / (args.out + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
