"""Primitive kinds side by side on a standard sparse-view scene: quality, size, training and render time.

Each kind trains through the CLI (``sparsesplat reconstruct --primitive KIND``) with the same schedule and the
same primitive budget; the table gives test PSNR/SSIM, primitives, training seconds and the CPU render time
per test frame of the exported scene.ply (loaded back, rendered in the user's frame), with ratios to the
Gaussians of the same run.

    python -m sparsesplat.benchmarks.primitives --scene ../shared/data/llff/fern --protocol llff3 --iters 500
    python -m sparsesplat.benchmarks.primitives --summarize RUN_DIR ...   # tabulate existing run folders
"""

from __future__ import annotations

import argparse
import json
import platform
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def load_scene_ply(path: Path):
    """A run folder's scene.ply as primitives, whatever the kind."""
    from sparsesplat.rasterizer.ply import load_gaussians_ply
    from sparsesplat.rasterizer.ply_convexes import load_convexes_ply

    with open(path, "rb") as f:
        header = f.read(4096)
    return load_convexes_ply(path) if b"element convex" in header else load_gaussians_ply(path)


def render_seconds(run: Path, scene_path: str, protocol: str, repeats: int = 3) -> float:
    """Median CPU seconds to render one test view of the run's exported scene (cpu backend)."""
    from sparsesplat.datasets import load
    from sparsesplat.rasterizer import render

    scene = load(scene_path, protocol=protocol)
    prims = load_scene_ply(run / "scene.ply")
    times = []
    for i in scene.test_ids:
        cam = scene.cameras[[int(i)]]
        with torch.no_grad():
            render(prims, cam, backend="cpu", render_mode="RGB")
            for _ in range(repeats):
                t0 = time.perf_counter()
                render(prims, cam, backend="cpu", render_mode="RGB")
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train(kind: str, scene: str, protocol: str, out: Path, iters: int, budget: int, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "sparsesplat.recon.cli", "reconstruct", scene, "--protocol", protocol, "-o", str(out),
           "--primitive", kind, "--iters", str(iters), "--checkpoint-every", "0", "--overwrite",
           "--default.refine-start-iter", str(iters // 5), "--default.refine-stop-iter", str(int(iters * 0.8)),
           "--default.max-primitives", str(budget),
           "--convex.strategy.refine-start-iter", str(iters // 5),
           "--convex.strategy.refine-stop-iter", str(int(iters * 0.8)),
           "--convex.strategy.max-primitives", str(budget), *extra]
    subprocess.run(cmd, check=True)


def summarize(runs: list[Path], scene: str, protocol: str, stem: str, note: str) -> None:
    rows = []
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        kind = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))["primitive"]
        rows.append({"run": str(run), "primitive": kind, "psnr": m["psnr"], "ssim": m["ssim"],
                     "primitives": m["num_primitives"], "train_s": m["train_seconds"], "steps": m["steps"],
                     "render_s": render_seconds(run, scene, protocol)})
    base = next((r for r in rows if r["primitive"] == "gaussian"), None)
    lines = [f"# Primitives on {Path(scene).name} ({protocol})", "",
             f"{note}  ", f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}", "",
             "| primitive | steps | test PSNR | SSIM | primitives | train s | render ms/frame (cpu) | train time vs Gaussians | render time vs Gaussians |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rt = f"{r['train_s'] / base['train_s']:.2f}x" if base else "–"
        rr = f"{r['render_s'] / base['render_s']:.2f}x" if base else "–"
        lines.append(f"| {r['primitive']} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['primitives']} | "
                     f"{r['train_s']:.0f} | {1e3 * r['render_s']:.0f} | {rt} | {rr} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"scene": scene, "protocol": protocol, "note": note, "rows": rows},
                                                     indent=2) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", required=True)
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--primitives", nargs="+", default=["gaussian", "convex"])
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--budget", type=int, default=20_000, help="primitive cap for every kind")
    ap.add_argument("--runs", default="benchmarks/results/runs", help="where the run folders go")
    ap.add_argument("--summarize", nargs="*", default=None, help="only tabulate these existing run folders")
    ap.add_argument("--out", default=None, help="results stem (default: primitives_<scene>_<protocol>)")
    ap.add_argument("--note", default="", help="a line about the conditions (e.g. a shared CPU)")
    a, extra = ap.parse_known_args()
    stem = a.out or f"primitives_{Path(a.scene).name}_{a.protocol}"
    if a.summarize is not None:
        runs = [Path(r) for r in a.summarize]
    else:
        runs = []
        for kind in a.primitives:
            out = Path(a.runs) / f"{stem}_{kind}"
            train(kind, a.scene, a.protocol, out, a.iters, a.budget, extra)
            runs.append(out)
    default_note = "existing run folders" if a.summarize is not None else f"{a.iters} steps, budget {a.budget} primitives"
    summarize(runs, a.scene, a.protocol, stem, a.note or default_note)


if __name__ == "__main__":
    main()
