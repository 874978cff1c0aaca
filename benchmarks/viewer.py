"""Viewer speed: server-side frames per second of the render callback (the path every browser frame takes:
viewer camera -> Cameras -> render() -> colour map -> uint8), per render mode, at the still resolution
(512 on the longer side, square here) and at the lower resolution used while the camera moves.

Scenes: a run folder (``--run``, e.g. a trained fern or lego run; its scene.ply is loaded as
``sparsesplat view`` loads it) and/or a synthetic scene of ``--gaussians`` Gaussians (the rasterizer
benchmark's realistic distribution). The camera orbits the scene so frames differ as they do while a
user drags.

    python -m sparsesplat.benchmarks.viewer --run RUN_FOLDER --gaussians 100000
    OMP_NUM_THREADS=1 python -m sparsesplat.benchmarks.viewer ... --out viewer_1thread   # work per frame, one core
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def orbit_views(scene, n: int, aspect: float = 1.0):
    """n viewer cameras on a small arc around the scene's start view (the first training camera)."""
    from sparsesplat.viewer.camera import ViewCamera, matrix_to_quat
    from sparsesplat.viewer.scene import primitive_centers, scene_frame

    fr = scene_frame(scene.cameras, scene.points, primitive_centers(scene.get_primitives()))
    start = np.asarray(fr.start.position)
    target = start + fr.start.forward * fr.scale
    up = fr.up
    views = []
    for k in range(n):
        a = math.radians(-10 + 20 * k / max(n - 1, 1))
        off = start - target
        axis = up / np.linalg.norm(up)  # rotate the offset about the up axis (Rodrigues)
        off = off * math.cos(a) + np.cross(axis, off) * math.sin(a) + axis * (axis @ off) * (1 - math.cos(a))
        eye = target + off
        z = (target - eye) / np.linalg.norm(target - eye)
        x = np.cross(z, up)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        views.append(ViewCamera(tuple(matrix_to_quat(np.stack([x, y, z], 1))), tuple(eye), fr.start.fov_y, aspect))
    return views


def measure(prims, views, settings, moving: bool, repeats: int) -> dict:
    from sparsesplat.viewer.render_view import render_view

    render_view(prims, views[0], settings, moving)  # warm-up (builds/loads the backend)
    times, cpu = [], []
    for r in range(repeats):
        for v in views:
            t0, c0 = time.perf_counter(), time.process_time()
            frame = render_view(prims, v, settings, moving)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    med, best, cpu_med = statistics.median(times), min(times), statistics.median(cpu)
    h, w = frame.image.shape[:2]
    # with one thread, CPU seconds per frame measure the work and barely change when other jobs share the cores
    idle = torch.get_num_threads() / cpu_med if cpu_med > 0 else float("nan")
    return {"size": f"{w}x{h}", "ms": 1000 * med, "fps": 1.0 / med, "best_fps": 1.0 / best,
            "cpu_ms": 1000 * cpu_med, "idle_fps": idle, "frames": len(times)}


def to_device(prims, device: str):
    import copy

    out = copy.copy(prims)
    for k, v in vars(prims).items():
        if isinstance(v, torch.Tensor):
            setattr(out, k, v.to(device))
    return out


def synthetic_scene(n: int):
    from sparsesplat.benchmarks.rasterizer import make_gaussians
    from sparsesplat.datasets.synthetic import make_cameras
    from sparsesplat.viewer.scene import ViewerScene

    g = make_gaussians(n)
    return ViewerScene(get_primitives=lambda: g, cameras=make_cameras(8, 400, 400, "orbit"), title=f"synthetic {n}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, action="append", default=[], help="run folder(s) to load")
    p.add_argument("--gaussians", type=int, nargs="*", default=[100_000], help="synthetic scene sizes")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--moving-scale", type=float, default=0.4)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", nargs="*", default=["RGB", "Depth", "Alpha"])
    p.add_argument("--device", default="cpu", help="cpu, or cuda (primitives on the GPU: the cuda backend)")
    p.add_argument("--out", default="viewer")
    p.add_argument("--note", default="", help="a line about the machine (e.g. other jobs sharing its cores)")
    args = p.parse_args()

    from sparsesplat.viewer.render_view import RenderSettings

    scenes = []
    if args.run:
        from sparsesplat.recon.view_run import load_run_for_viewer

        scenes += [(f"run {r.name}", load_run_for_viewer(r)) for r in args.run]
    scenes += [(f"synthetic {n:,} Gaussians", synthetic_scene(n)) for n in args.gaussians]
    rows = []
    for label, scene in scenes:
        prims = to_device(scene.get_primitives(), args.device)
        views = orbit_views(scene, args.views)
        for mode in args.modes:
            s = RenderSettings(mode=mode, resolution=args.resolution, moving_scale=args.moving_scale,
                               background=scene.background)
            for moving in (False, True):
                r = measure(prims, views, s, moving, args.repeats)
                rows.append({"scene": label, "n": len(prims), "mode": mode, "moving": moving, **r})
                print(f"{label:34s} {mode:6s} {'moving' if moving else 'still ':6s} {r['size']:>8s} "
                      f"{r['ms']:8.1f} ms  {r['fps']:6.2f} fps (best {r['best_fps']:.2f}) "
                      f"CPU {r['cpu_ms']:.0f} ms -> {r['idle_fps']:.2f} /s", flush=True)
    load = os.getloadavg()
    machine = (torch.cuda.get_device_name() if args.device == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    lines = [
        f"# Viewer: server-side render speed ({machine})", "",
        f"Command: `{'OMP_NUM_THREADS=' + os.environ['OMP_NUM_THREADS'] + ' ' if 'OMP_NUM_THREADS' in os.environ else ''}"
        f"python -m sparsesplat.benchmarks.viewer {' '.join(_argv())}`  ",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), backend auto "
        f"({'CUDA' if args.device == 'cuda' else 'CPU C++'}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        f"Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min, {os.cpu_count()} cores). "
        + args.note, "",
        "Median and best over the frames of a small orbit around the first camera (the best frame is the "
        "closest to an idle machine here); includes Cameras set-up, render() (colour and expected depth: "
        "the depth also goes to the browser so the scene hides frusta behind it), the colour map and the uint8 "
        "conversion, not the JPEG/PNG encoding and websocket send.", "",
        "CPU ms / frame is the process CPU time. Run with OMP_NUM_THREADS=1 it is the work of one frame on one "
        "core, which other jobs sharing the machine barely change (with more threads, OpenMP's spin-waiting "
        "inflates it); the last column, threads / CPU time, is then one idle core's frame rate.", "",
        "| scene | primitives | mode | camera | frame | median ms / frame | median frames/s | best frames/s "
        "| CPU ms / frame | threads / CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scene']} | {r['n']:,} | {r['mode']} | {'moving' if r['moving'] else 'still'} | "
                     f"{r['size']} | {r['ms']:.0f} | {r['fps']:.2f} | {r['best_fps']:.2f} | {r['cpu_ms']:.0f} "
                     f"| {r['idle_fps']:.2f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.out}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def _argv() -> list[str]:
    """The command line with run folders shortened to their names and the --note text left out."""
    import sys

    args, out, skip = sys.argv[1:], [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--note":
            skip = True
            continue
        out.append(a if a.startswith("-") or "/" not in a else Path(a).name)
    return out


if __name__ == "__main__":
    main()
