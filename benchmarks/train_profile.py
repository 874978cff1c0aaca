"""Where a training run spends its time: wall seconds per stage of a real default run, per scene.

    python -m sparsesplat.benchmarks.train_profile                          # fern llff3 + lego blender8
    python -m sparsesplat.benchmarks.train_profile --scenes fern --iters 300 --out train_profile_dev
    python -m sparsesplat.benchmarks.train_profile --baseline-tree /tmp/old-checkout   # before/after, one run

Each scene runs ``reconstruct()`` with the CLI's defaults (the fast schedule, 3000 steps) and a
``StageTimer`` active (``rasterizer/profiling.py``): every stage of a training step (rendering split into
projection, SH colours and rasterization; the backward split into the rasterizer's kernels and the rest;
losses, densification, optimizer, ...) is charged its self time. The pipeline's own stages (loading,
initial points, evaluation and export) are timed around ``reconstruct``, split where training starts.

``--baseline-tree PATH`` also runs the same scenes with another checkout of the project (e.g. a
``git worktree`` of the commit before a change), one after the other in this run, on the same threads, and
writes the wall-time ratio and the PSNR difference beside the profile. The other checkout only needs this
script. The compiled rasterizer is built (or loaded) before each run's clock starts; a checkout older than
that (before the sixteenth session) charges its first build to its first render instead.

Results: benchmarks/results/<out>.md / .json (and .png with --plot).
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
from .sparse_views import RESULTS, SCENES, data_root


def profile_scene(scene: str, iters: int | None, seed: int, out_root: Path, settings: dict | None = None) -> dict:
    """One default run of ``scene`` under a StageTimer: the stage table, wall times and test metrics.
    ``settings``: {dotted name: value} of the reconstruct settings to change from the defaults."""
    from sparsesplat.rasterizer.profiling import StageTimer
    from sparsesplat.recon.pipeline import ReconstructConfig, reconstruct
    from sparsesplat.recon.run_config import with_settings
    from sparsesplat.recon.trainer import TrainConfig

    rel, protocol = SCENES[scene]
    train = TrainConfig(seed=seed, checkpoint_every=0)
    if iters:
        train.iters = iters
    cfg = ReconstructConfig(data=data_root() / rel, out=out_root / f"{scene}_s{seed}", protocol=protocol,
                            overwrite=True, train=train, schedule="fast")
    if settings:
        cfg = with_settings(cfg, settings)
    _warm_backend()
    started: list[float] = []
    t0 = time.perf_counter()
    with StageTimer(synchronize_cuda=torch.cuda.is_available()) as timer:
        metrics = reconstruct(cfg, log=lambda *a: None, on_start=lambda: started.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    train_s = metrics["train_seconds"]
    start = started[0]
    stages = dict(sorted(timer.seconds.items(), key=lambda kv: -kv[1]))
    steps = metrics["steps"]
    return {
        "scene": scene, "protocol": protocol, "seed": seed, "steps": steps, "wall_seconds": wall,
        "before_training_seconds": start - t0, "train_seconds": train_s,
        "after_training_seconds": wall - (start - t0) - train_s,
        "stages": stages, "calls": dict(timer.calls),
        "unmarked_training_seconds": max(0.0, train_s - sum(stages.values())),
        "psnr": metrics["psnr"], "ssim": metrics["ssim"], "psnr_masked": metrics.get("psnr_masked"),
        "num_primitives": metrics["num_primitives"], "init_points": metrics["init_points"],
    }


def _warm_backend() -> None:
    """Build (or load) the compiled rasterizer the run will use before the clock starts, so that a first build
    (about a minute) is not charged to the first render's stage."""
    from sparsesplat.rasterizer.build import BackendUnavailable, load_extension

    try:
        load_extension("cuda" if torch.cuda.is_available() else "cpu")
    except BackendUnavailable:
        pass  # the run falls back to the torch backend, as it would anyway


def parse_settings(ap: argparse.ArgumentParser, pairs: list[str]) -> dict:
    """{name: value} from NAME=VALUE strings, each value read as YAML (0.5, true, [1, 2], text)."""
    import yaml

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            ap.error(f"--set {pair!r}: expected NAME=VALUE, e.g. train.binocular_resolution=0.5")
        out[name.strip()] = yaml.safe_load(value)
    return out


def _baseline(tree: Path, args) -> list[dict]:
    """Run this benchmark with the checkout at ``tree`` (a subprocess whose ``sparsesplat`` is that tree)."""
    with tempfile.TemporaryDirectory() as shim:
        pkg = Path(shim) / "sparsesplat"
        pkg.mkdir()
        (pkg / "__init__.py").write_text((tree / "sparsesplat" / "__init__.py").read_text())
        for sub in ("recon", "rasterizer", "priors", "datasets", "viewer", "benchmarks"):
            (pkg / sub).symlink_to(tree / sub)
        out_json = Path(shim) / "rows.json"
        cmd = [sys.executable, "-m", "sparsesplat.benchmarks.train_profile", "--scenes", *args.scenes,
               "--seed", str(args.seed), "--rows-json", str(out_json)] + (["--iters", str(args.iters)] if args.iters else [])
        env = {**os.environ, "PYTHONPATH": shim + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "SPARSESPLAT_DATA": str(data_root())}
        # run from the shim folder: from this checkout's root, ``python -m`` would import its sparsesplat/
        subprocess.run(cmd, env=env, check=True, cwd=shim)
        rows = json.loads(out_json.read_text())
    for r in rows:
        r["checkout"] = str(tree)
    return rows


def _git_rev(tree: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def write_tables(rows: list[dict], base: list[dict], meta: dict, stem: str) -> None:
    lines = [f"# Training profile: where a default run's time goes ({meta['machine']}, {meta['threads']} threads)", "",
             f"`{meta['command']}` on {meta['date']}, torch {meta['torch']}, commit {meta['rev']}. "
             "Self time per stage of the training loop (`rasterizer/profiling.py`): nested stages are not counted "
             "twice; 'unmarked' is the rest of the loop (progress, Python).", ""]
    for r in rows:
        lines += [f"## {r['scene']} {r['protocol']} (seed {r['seed']}, {r['steps']} steps, "
                  f"{r['init_points']} initial points, {r['num_primitives']} at the end)", "",
                  f"Wall {r['wall_seconds']:.0f} s: before training {r['before_training_seconds']:.0f} s "
                  f"(loading, initial points), training {r['train_seconds']:.0f} s "
                  f"({1000 * r['train_seconds'] / max(r['steps'], 1):.0f} ms/step), "
                  f"after {r['after_training_seconds']:.0f} s (evaluation, export). "
                  f"Test PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}"
                  + (f", masked PSNR {r['psnr_masked']:.2f}" if r.get("psnr_masked") else "") + ".", "",
                  "| stage | seconds | share of training | ms per step | calls |", "|---|---|---|---|---|"]
        items = list(r["stages"].items()) + [("unmarked", r["unmarked_training_seconds"])]
        for name, sec in items:
            lines.append(f"| {name} | {sec:.1f} | {100 * sec / max(r['train_seconds'], 1e-9):.1f}% | "
                         f"{1000 * sec / max(r['steps'], 1):.1f} | {r['calls'].get(name, '')} |")
        lines.append("")
    if base:
        lines += [f"## Against the baseline checkout (commit {meta.get('baseline_rev')}), same run, same threads", "",
                  "| scene | wall before (s) | wall now (s) | speed-up | training before (s) | training now (s) | "
                  "speed-up | PSNR before | PSNR now | difference |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            b = next((x for x in base if x["scene"] == r["scene"]), None)
            if b is None:
                continue
            lines.append(f"| {r['scene']} | {b['wall_seconds']:.0f} | {r['wall_seconds']:.0f} | "
                         f"{b['wall_seconds'] / r['wall_seconds']:.2f}x | {b['train_seconds']:.0f} | "
                         f"{r['train_seconds']:.0f} | {b['train_seconds'] / r['train_seconds']:.2f}x | "
                         f"{b['psnr']:.2f} | {r['psnr']:.2f} | {r['psnr'] - b['psnr']:+.2f} |")
        lines.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results_md(RESULTS / f"{stem}.md", lines)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows, "baseline": base}, indent=1))


def plot(rows: list[dict], stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.9 * len(rows)))
    names = sorted({n for r in rows for n in r["stages"]} | {"unmarked"},
                   key=lambda n: -sum(r["stages"].get(n, r["unmarked_training_seconds"] if n == "unmarked" else 0)
                                      for r in rows))
    cmap = plt.get_cmap("tab20")
    for y, r in enumerate(rows):
        left = 0.0
        for k, n in enumerate(names):
            sec = r["unmarked_training_seconds"] if n == "unmarked" else r["stages"].get(n, 0.0)
            ms = 1000 * sec / max(r["steps"], 1)
            ax.barh(y, ms, left=left, color=cmap(k % 20), label=n if y == 0 else None)
            left += ms
    ax.set_yticks(range(len(rows)), [f"{r['scene']} {r['protocol']}" for r in rows])
    ax.set_xlabel("ms per training step")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(rows) < 3 else -0.2))
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=120, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["fern", "lego"], choices=list(SCENES))
    ap.add_argument("--iters", type=int, default=None, help="training steps (default: the CLI's fast schedule)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: all cores)")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="another checkout to run the same scenes with, for a before/after ratio")
    ap.add_argument("--out", default="train_profile", help="results file stem")
    ap.add_argument("--plot", action="store_true", help="also write benchmarks/results/<out>.png")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="change a reconstruct setting from its default, by its config.yaml name "
                         "(e.g. train.binocular_resolution=0.5); repeatable")
    ap.add_argument("--rows-json", type=Path, default=None, help=argparse.SUPPRESS)  # used by --baseline-tree
    args = ap.parse_args()
    settings = parse_settings(ap, args.set)
    if not data_root().is_dir():
        sys.exit(f"scenes not found in {data_root()}; set SPARSESPLAT_DATA to the folder holding llff/ and nerf_synthetic/")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="train_profile_") as tmp:
        rows = [profile_scene(s, args.iters, args.seed, Path(tmp), settings) for s in args.scenes]
    if args.rows_json:
        args.rows_json.write_text(json.dumps(rows))
        return
    for r in rows:
        print(json.dumps({k: r[k] for k in ("scene", "steps", "wall_seconds", "train_seconds", "psnr")}), flush=True)
    base = _baseline(args.baseline_tree.resolve(), args) if args.baseline_tree else []
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    meta = {"machine": dev, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "rev": _git_rev(Path(__file__).resolve().parents[1]),
            "command": "python -m sparsesplat.benchmarks.train_profile " + " ".join(sys.argv[1:])}
    if args.baseline_tree:
        meta["baseline_rev"] = _git_rev(args.baseline_tree)
    write_tables(rows, base, meta, args.out)
    if args.plot:
        try:
            plot(rows, args.out)
        except ImportError:
            print("matplotlib not installed: no plot (pip install matplotlib)")
    print(f"wrote {RESULTS / (args.out + '.md')}")


if __name__ == "__main__":
    main()
