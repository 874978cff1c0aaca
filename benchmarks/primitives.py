"""Primitive kinds side by side on the standard sparse-view scenes: quality, count, training time and render
time per frame, with ratios to Gaussians trained in the same run at the same primitive cap.

    python -m sparsesplat.benchmarks.primitives --scenes fern --iters 1000 --cap 20000
    python -m sparsesplat.benchmarks.primitives --scenes fern lego --primitives gaussian triangle
    python -m sparsesplat.benchmarks.primitives --runs lego:gaussian:RUN_A lego:ges:RUN_B --out primitives_ges

Each (scene, primitive) trains through ``benchmarks/sparse_views.py`` (Gaussians with the MCMC strategy so
the cap binds both), reusing a finished run folder of the same name; or ``--runs`` names finished run folders
(e.g. ``sparsesplat reconstruct`` runs with the CLI defaults), each as scene:primitive:folder. Render time is
the median over the test views (three rounds, the kinds of a scene taking turns view by view) of ``render()`` of
the exported scene (user frame) on the CPU backend, after a warm-up; size is that of scene.ply.
Results: benchmarks/results/<out>.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from .results_file import write_results_md
from .sparse_views import RESULTS, SCENES, data_root, reconstruct_settings, run_one


def render_ms(rows: list[dict], backend: str = "cpu", repeats: int = 3) -> None:
    """Sets each row's ``render_ms``: the median milliseconds per test view to render its exported scene. The
    rows of a scene take turns view by view, so a machine whose speed drifts (a shared one) slows them alike."""
    from sparsesplat.rasterizer import render
    from sparsesplat.rasterizer.scene_io import read_scene_ply
    from sparsesplat.recon.pipeline import ReconstructConfig, load_scene

    for scene in dict.fromkeys(r["scene"] for r in rows):
        rs = [r for r in rows if r["scene"] == scene]
        rel, protocol = SCENES[scene]
        # the protocol's published resolution, exactly as training and evaluation load it
        data = load_scene(ReconstructConfig(data=data_root() / rel, out=Path(rs[0]["run"]), protocol=protocol))
        cams = data.cameras[data.test_ids]
        prims = [read_scene_ply(Path(r["run"]) / "scene.ply", r["primitive"]) for r in rs]
        times: list[list[float]] = [[] for _ in rs]
        with torch.no_grad():
            for p in prims:  # warm-up (and the build, on first use)
                render(p, cams[0], backend=backend, render_mode="RGB")
            for _ in range(repeats):
                for i in range(len(cams)):
                    for k, p in enumerate(prims):
                        t0 = time.perf_counter()
                        render(p, cams[i], backend=backend, render_mode="RGB")
                        times[k].append(time.perf_counter() - t0)
        for r, t in zip(rs, times):
            r["render_ms"] = 1e3 * statistics.median(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=["fern"], choices=list(SCENES))
    ap.add_argument("--primitives", nargs="+", default=["gaussian", "triangle"])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--cap", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", nargs="+", default=[], metavar="SCENE:PRIMITIVE:FOLDER",
                    help="finished run folders to measure instead of training (--scenes, --primitives, --iters and "
                         "--cap are then ignored)")
    ap.add_argument("--out", default="primitives")
    a = ap.parse_args()
    rows = []
    for spec in a.runs:
        scene, prim, folder = spec.split(":", 2)
        if scene not in SCENES:
            ap.error(f"--runs {spec}: unknown scene {scene!r} (one of {', '.join(SCENES)})")
        rows.append(measure(scene, prim, Path(folder), json.loads((Path(folder) / "metrics.json").read_text())))
    for scene in a.scenes if not a.runs else []:
        for prim in a.primitives:
            stem = f"{a.out}_{prim}"
            run = RESULTS / "runs" / f"{stem}_{scene}_s{a.seed}"
            if (run / "metrics.json").is_file() and (run / "scene.ply").is_file():
                m = {"scene": scene, **json.loads((run / "metrics.json").read_text())}
            else:
                flags = ["--primitive", prim, "--strategy", "mcmc" if prim == "gaussian" else "default",
                         "--dropout", "0.2", "--binocular-weight", "0", "--opacity-decay", "0", "--iters", str(a.iters)]
                args = SimpleNamespace(out=stem, cap=a.cap, template=reconstruct_settings(flags))
                m = run_one(scene, a.seed, args)
            rows.append(measure(scene, prim, run, m))
    render_ms(rows)
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    meta = {"machine": machine, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "command": "python -m sparsesplat.benchmarks.primitives " + " ".join(sys.argv[1:])}
    write_table(rows, meta, a.out)


def measure(scene: str, primitive: str, run: Path, metrics: dict) -> dict:
    """A row: the run's metrics and the size of its scene.ply (``render_ms`` adds the render time)."""
    m = {**metrics, "scene": scene, "primitive": primitive, "run": str(run),
         "ply_mb": (run / "scene.ply").stat().st_size / 1e6}
    print(json.dumps({k: m.get(k) for k in ("scene", "primitive", "psnr", "ssim", "num_primitives",
                                             "train_seconds", "ply_mb")}), flush=True)
    return m


def write_table(rows: list[dict], meta: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    lines = [f"# Primitive kinds side by side ({meta['machine']})", "", f"Command: `{meta['command']}`  ",
             f"torch {meta['torch']}, {meta['date']}", ""]
    for scene in dict.fromkeys(r["scene"] for r in rows):
        rs = [r for r in rows if r["scene"] == scene]
        base = next((r for r in rs if r["primitive"] == "gaussian"), None)
        lines += [f"## {scene} ({SCENES[scene][1]})", "",
                  "| primitive | PSNR | SSIM | primitives | scene.ply MB | train s | render ms/frame "
                  "| train time vs Gaussians | render time vs Gaussians |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            rt = f"{r['train_seconds'] / base['train_seconds']:.2f}x" if base else "–"
            rr = f"{r['render_ms'] / base['render_ms']:.2f}x" if base else "–"
            size = f"{r['ply_mb']:.1f}" if r.get("ply_mb") is not None else "–"
            lines.append(f"| {r['primitive']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['num_primitives']} | {size} "
                         f"| {r['train_seconds']:.0f} | {r['render_ms']:.1f} | {rt} | {rr} |")
        lines.append("")
    write_results_md(RESULTS / f"{stem}.md", lines)
    print(f"wrote {RESULTS / (stem + '.md')}")


if __name__ == "__main__":
    main()
