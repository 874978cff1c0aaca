"""Beyond one process: a benchmark sweep on Ray with 1 and with N workers, and data-parallel training with 1 and
with N processes, on this machine, as ratios measured in the same run.

    python -m sparsesplat.benchmarks.scale                       # the bundled example -> benchmarks/results/scale.md
    python -m sparsesplat.benchmarks.scale --scenes examples/synthetic_forward:llff6 ../shared/data/nerf_synthetic/lego:blender8

Sweep: ``sparse_views --scenes example`` over ``--seeds`` short runs, once one by one with every core, once on Ray
with ``--workers`` tasks of cores/workers threads each: the wall time of the whole sweep. Training: ``sparsesplat
reconstruct`` with ``--views-per-step N`` in one process (every core) against ``--nproc N`` (cores/N threads each):
seconds per step from metrics.json; both compute the same steps (tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .results_file import write_results_md

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], env: dict) -> float:
    t0 = time.time()
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.time() - t0


def sweep_times(seeds: int, iters: int, workers: int, cores: int, tmp: Path) -> dict:
    base = [sys.executable, "-m", "sparsesplat.benchmarks.sparse_views", "--scenes", "example", "--seeds",
            *map(str, range(seeds)), "--out", "sweep"]
    run = ["--", "--iters", str(iters), "--init", "random"]  # the reconstruct options of every run
    one = _run(base + ["--results", str(tmp / "one")] + run, {"OMP_NUM_THREADS": str(cores)})
    many = _run(base + ["--results", str(tmp / "ray"), "--workers", str(workers), "--threads-per-run",
                        str(max(1, cores // workers))] + run, {})
    a, b = _psnr_by_seed(tmp / "one" / "sweep.json"), _psnr_by_seed(tmp / "ray" / "sweep.json")
    assert a.keys() == b.keys(), "the sweep on Ray did not finish every run"
    # the thread counts differ (cores vs cores/workers per run), so the sums in the CPU rasterizer may differ in
    # the last bits; with equal threads the tables are identical (tests/test_sweep.py)
    return {"runs": seeds, "iters": iters, "workers": workers, "one_by_one_s": one, "ray_s": many,
            "speedup": one / many, "max_psnr_difference": max(abs(a[k] - b[k]) for k in a)}


def _psnr_by_seed(path: Path) -> dict:
    return {r["seed"]: r["psnr"] for r in json.loads(path.read_text())["rows"]}


def training_times(scene: str, protocol: str, nproc: int, iters: int, cores: int, init: str, tmp: Path) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    base = ["sparsesplat", "reconstruct", scene, "--protocol", protocol, "--iters", str(iters), "--init", init,
            "--overwrite", "--checkpoint-every", "0"]
    _run(base + ["-o", str(tmp / "p1"), "--views-per-step", str(nproc)], {"OMP_NUM_THREADS": str(cores)})
    env = {"OMP_NUM_THREADS": str(max(1, cores // nproc))}
    _run(base + ["-o", str(tmp / "pn"), "--nproc", str(nproc)], env)
    m1 = json.loads((tmp / "p1" / "metrics.json").read_text())
    mn = json.loads((tmp / "pn" / "metrics.json").read_text())
    return {"scene": Path(scene).name, "protocol": protocol, "nproc": nproc, "views_per_step": nproc, "iters": iters,
            "one_process_s_per_step": m1["train_seconds"] / iters, "nproc_s_per_step": mn["train_seconds"] / iters,
            "speedup": m1["train_seconds"] / mn["train_seconds"], "psnr_one": m1["psnr"], "psnr_nproc": mn["psnr"],
            "primitives": mn["num_primitives"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4, help="runs in the sweep")
    ap.add_argument("--sweep-iters", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenes", nargs="+", default=[f"{REPO / 'examples' / 'synthetic_forward'}:llff6"],
                    help="training comparisons, each FOLDER:PROTOCOL")
    ap.add_argument("--init", default="random")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--train-iters", type=int, default=200)
    ap.add_argument("--note", default="", help="a line about the machine (e.g. other work sharing its cores)")
    ap.add_argument("--out", default="scale")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sweep = sweep_times(args.seeds, args.sweep_iters, args.workers, cores, tmp)
        train = [training_times(*item.rsplit(":", 1), args.nproc, args.train_iters, cores, args.init, tmp / str(k))
                 for k, item in enumerate(args.scenes)]
    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU, {cores} cores"
    meta = {"machine": machine, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "note": args.note,
            "command": "python -m sparsesplat.benchmarks.scale " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "sweep": sweep, "training": train}, indent=2)
                                              + "\n")
    lines = [f"# Beyond one process ({machine})", "", f"`{meta['command']}` on {meta['date']}, torch {meta['torch']}."
             + (f" {args.note}" if args.note else ""), "",
             "## A benchmark sweep on Ray", "",
             "| runs | steps each | one by one, all cores (s) | Ray, workers x threads (s) | speed-up | largest PSNR difference |",
             "|---|---|---|---|---|---|",
             f"| {sweep['runs']} | {sweep['iters']} | {sweep['one_by_one_s']:.1f} | {sweep['ray_s']:.1f} "
             f"({sweep['workers']} x {max(1, cores // sweep['workers'])}) | {sweep['speedup']:.2f}x | "
             f"{sweep['max_psnr_difference']:.2g} dB |", "",
             "## Data-parallel training", "",
             "| scene | views per step | steps | 1 process, all cores (s/step) | processes x threads (s/step) | "
             "speed-up | PSNR 1 / N | primitives |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {t['scene']} ({t['protocol']}) | {t['views_per_step']} | {t['iters']} | "
              f"{t['one_process_s_per_step']:.3f} | {t['nproc_s_per_step']:.3f} ({t['nproc']} x "
              f"{max(1, cores // t['nproc'])}) | {t['speedup']:.2f}x | {t['psnr_one']:.2f} / {t['psnr_nproc']:.2f} | "
              f"{t['primitives']} |" for t in train] + [""]
    write_results_md(RESULTS / f"{args.out}.md", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
