"""Rasterizer speed: forward and forward+backward time and peak memory per backend.

Gaussians come from a realistic distribution: points sampled on the visible surfaces of the procedural
orbit scene (datasets/synthetic.py), scales from the mean distance to the 3 nearest neighbours (the 3DGS
initialization), random orientations, opacities spread over (0.1, 1), SH degree 3. Cameras orbit the
scene. Each configuration runs in its own subprocess so its peak RSS is its own.

    python -m sparsesplat.benchmarks.rasterizer                         # the table in benchmarks/results/
    python -m sparsesplat.benchmarks.rasterizer --sizes 10000 --resolutions 256x256 --backends torch cpu
    python -m sparsesplat.benchmarks.rasterizer --primitive triangle --sizes 10000 100000   # triangles

Times are medians over repeats; ratios are against the ``torch`` backend measured in the same run (where it
fits the time budget). "Gaussian-pixel evaluations" counts, per camera, sum over Gaussians of their
tile-bound area, i.e. the work the compositing loop may do, per second of forward time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .results_file import write_results_md

RESULTS = Path(__file__).resolve().parent / "results"
KIND_NAMES = {"gaussian": "Gaussians", "ges": "GES splats", "convex": "convexes", "triangle": "triangles"}


def make_ges(g, seed: int = 0):
    """``make_gaussians``' scene as GES splats, shapes uniform in [1.5, 3] (flat tops and sharp peaks both;
    below 2 their footprints grow, (2 ln 255 o)^(1/beta) standard deviations)."""
    from sparsesplat.rasterizer import GeneralizedGaussians

    gen = torch.Generator().manual_seed(seed + 7)
    shapes = (1.5 + 1.5 * torch.rand(len(g.means), generator=gen)).to(g.means.device)
    return GeneralizedGaussians(g.means, g.quats, g.scales, g.opacities, shapes, sh=g.sh)


def make_gaussians(n: int, seed: int = 0, device="cpu"):
    from scipy.spatial import cKDTree

    from sparsesplat.datasets.synthetic import make_cameras, sample_points
    from sparsesplat.rasterizer import Gaussians
    from sparsesplat.rasterizer.sh import rgb_to_sh0

    cams = make_cameras(24, 400, 400, "orbit")
    pts, cols = sample_points(cams, "orbit", int(n * 1.15) + 64, seed)
    pts, cols = pts[:n], cols[:n]
    if len(pts) < n:  # top up by jittering (rare: sky rays)
        extra = np.random.default_rng(seed).integers(0, len(pts), n - len(pts))
        pts = np.concatenate([pts, pts[extra] + 0.01 * np.random.default_rng(1).standard_normal((len(extra), 3))])
        cols = np.concatenate([cols, cols[extra]])
    d, _ = cKDTree(pts).query(pts, k=4)
    scale = np.clip(d[:, 1:].mean(1), 1e-4, None)
    g = torch.Generator().manual_seed(seed)
    sh = torch.zeros(n, 16, 3)
    sh[:, 0] = rgb_to_sh0(torch.from_numpy(cols).float())
    sh[:, 1:] = 0.05 * torch.randn(n, 15, 3, generator=g)
    gauss = Gaussians(
        means=torch.from_numpy(pts).float(),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.from_numpy(scale).float()[:, None] * torch.exp(0.3 * torch.randn(n, 3, generator=g)),
        opacities=0.1 + 0.9 * torch.rand(n, generator=g),
        sh=sh,
    )
    return Gaussians(*(t.to(device) for t in (gauss.means, gauss.quats, gauss.scales, gauss.opacities)), sh=gauss.sh.to(device))


def make_convexes(n: int, width: int, seed: int = 0, device="cpu", P: int = 6):
    """``make_gaussians``' points, colours and sizes, each turned into a convex of P = 6 points on a randomly
    rotated Fibonacci sphere of that radius (the 3D Convex Splatting initialization), with delta and sigma
    chosen so edges are about 2 pixels soft at the benchmark cameras (focal ~1.07 W, depth ~4)."""
    from sparsesplat.rasterizer import Convexes
    from sparsesplat.rasterizer.quaternions import quat_to_rotmat
    from sparsesplat.recon.kinds.convex import fibonacci_sphere

    g = make_gaussians(n, seed=seed)
    r = g.scales.mean(dim=1)  # (N,)
    dirs = torch.as_tensor(fibonacci_sphere(P) - fibonacci_sphere(P).mean(0), dtype=torch.float32)
    R = quat_to_rotmat(torch.nn.functional.normalize(g.quats, dim=-1))  # random orientations
    points = g.means[:, None, :] + r[:, None, None] * torch.einsum("nij,pj->npi", R, dirs)
    focal = 0.5 * width / np.tan(np.radians(25.0))
    delta = 2.0 / (focal * r)
    sigma = torch.full((n,), 0.25)
    cv = Convexes(points, delta, sigma, g.opacities, sh=g.sh)
    return Convexes(*(t.to(device) for t in (cv.points, cv.delta, cv.sigma, cv.opacities)), sh=cv.sh.to(device))


def make_triangles(n: int, seed: int = 0, device="cpu"):
    """Triangles on the same surface points as ``make_gaussians``: equilateral, randomly oriented,
    circumradius twice the Gaussians' scale (about their visible reach), sigma 1, same opacities and SH."""
    from sparsesplat.rasterizer import Triangles
    from sparsesplat.recon.kinds.triangle import random_triangles_at

    g = make_gaussians(n, seed)
    r = 2.0 * g.scales.mean(-1).double().numpy()
    verts = torch.from_numpy(random_triangles_at(g.means.double().numpy(), r, seed)).float()
    return Triangles(verts.to(device), torch.ones(n, device=device), g.opacities.to(device), sh=g.sh.to(device))


def cameras_for(width: int, height: int, device="cpu"):
    from sparsesplat.datasets.synthetic import make_cameras

    cams = make_cameras(8, width, height, "orbit")
    return cams[3].to(device=device, dtype=torch.float32)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure(backend: str, n: int, width: int, height: int, repeats: int, device: str,
            primitive: str = "gaussian") -> dict:
    from sparsesplat.rasterizer import Convexes, render

    cams = cameras_for(width, height, device)
    if primitive == "convex":
        c = make_convexes(n, width, device=device)
        params = [t.requires_grad_(True) for t in (c.points, c.delta, c.sigma, c.opacities, c.sh)]
        prims = Convexes(*params[:4], sh=params[4])
    else:
        prims = make_triangles(n, device=device) if primitive == "triangle" else make_gaussians(n, device=device)
        if primitive == "ges":
            prims = make_ges(prims)
        for t in vars(prims).values():
            if torch.is_tensor(t):
                t.requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return render(prims, cams, backend=backend)

    def fwd_bwd():
        out = render(prims, cams, backend=backend)
        (out.colors.sum() + out.depths.mean()).backward()
        return out

    out = fwd()  # warm-up (and the build, on first use)
    fwd_bwd()
    r = out.meta.radii[0].double()
    evals = float((4 * r[:, 0] * r[:, 1]).sum())
    t_f, t_fb = [], []
    for _ in range(repeats):
        _sync(device); t0 = time.perf_counter(); fwd(); _sync(device); t_f.append(time.perf_counter() - t0)
        _sync(device); t0 = time.perf_counter(); fwd_bwd(); _sync(device); t_fb.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "backend": backend, "primitive": primitive, "n": n, "width": width, "height": height,
        "forward_s": statistics.median(t_f), "forward_backward_s": statistics.median(t_fb),
        "peak_mb": peak, "visible": int(out.meta.visibility.sum()),
        "gauss_pixel_evals_per_s": evals / statistics.median(t_f),
    }


def run_child(args: list[str], timeout: float) -> dict | None:
    cmd = [sys.executable, "-m", "sparsesplat.benchmarks.rasterizer", "--child", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {timeout:.0f} s budget"}
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def write_table(rows: list[dict], meta: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    base = {(r["n"], r["width"], r["height"]): r for r in rows if r.get("backend") == "torch" and "error" not in r}
    lines = [
        f"# Rasterizer speed: {KIND_NAMES.get(meta.get('primitive', 'gaussian'))} ({meta['machine']})", "",
        f"Command: `{meta['command']}`  ", f"torch {meta['torch']}, {meta['threads']} threads, {meta['date']}", "",
        "| N | size | backend | forward ms | fwd+bwd ms | fwd speed-up vs torch | fwd+bwd speed-up vs torch | peak MB | Gauss-px evals/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        if "error" in r:
            lines.append(f"| {r['n']} | {size} | {r['backend']} | – | – | – | – | – | {r['error']} |")
            continue
        b = base.get((r["n"], r["width"], r["height"]))
        sf = f"{b['forward_s'] / r['forward_s']:.1f}x" if b else "–"
        sfb = f"{b['forward_backward_s'] / r['forward_backward_s']:.1f}x" if b else "–"
        lines.append(
            f"| {r['n']} | {size} | {r['backend']} | {1e3 * r['forward_s']:.1f} | {1e3 * r['forward_backward_s']:.1f} "
            f"| {sf} | {sfb} | {r['peak_mb']:.0f} | {r['gauss_pixel_evals_per_s']:.3g} |"
        )
    write_results_md(RESULTS / f"{stem}.md", lines)


def plot(rows: list[dict], stem: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    sizes = sorted({(r["width"], r["height"]) for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.8), squeeze=False)
    for ax, (w, h) in zip(axes[0], sizes):
        for backend in sorted({r["backend"] for r in rows}):
            pts = sorted((r["n"], r["forward_backward_s"]) for r in rows
                         if r["backend"] == backend and (r["width"], r["height"]) == (w, h) and "error" not in r)
            if pts:
                ax.loglog(*zip(*pts), "o-", label=f"{backend} fwd+bwd")
            pts = sorted((r["n"], r["forward_s"]) for r in rows
                         if r["backend"] == backend and (r["width"], r["height"]) == (w, h) and "error" not in r)
            if pts:
                ax.loglog(*zip(*pts), "x--", label=f"{backend} fwd")
        ax.set_title(f"{w}x{h}")
        ax.set_xlabel("Gaussians")
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=None, help="default: torch cpu (and cuda gsplat on a GPU)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 500_000])
    ap.add_argument("--resolutions", nargs="+", default=["256x256", "512x512", "800x800"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=600.0, help="seconds allowed per configuration")
    ap.add_argument("--torch-max-n", type=int, default=100_000, help="skip the slow torch backend above this N")
    ap.add_argument("--out", default=None, help="results file stem (default: rasterizer_<cpu|cuda>)")
    ap.add_argument("--primitive", choices=list(KIND_NAMES), default="gaussian")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.child:
        w, h = map(int, a.resolutions[0].split("x"))
        print(json.dumps(measure(a.backends[0], a.sizes[0], w, h, a.repeats, device, a.primitive)))
        return
    backends = a.backends or (["torch", "cuda", "gsplat"] if device == "cuda" else ["torch", "cpu"])
    if a.primitive != "gaussian":
        backends = [b for b in backends if b != "gsplat"]
    rows = []
    for n in a.sizes:
        for res in a.resolutions:
            w, h = map(int, res.split("x"))
            for b in backends:
                if b == "torch" and n > a.torch_max_n:
                    continue
                r = run_child(["--backends", b, "--sizes", str(n), "--resolutions", res, "--repeats", str(a.repeats),
                               "--primitive", a.primitive], a.budget)
                r = {"backend": b, "n": n, "width": w, "height": h, **r}
                rows.append(r)
                print(json.dumps(r), flush=True)
    machine = (torch.cuda.get_device_name() if device == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    meta = {"primitive": a.primitive, "machine": machine, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d"), "command": "python -m sparsesplat.benchmarks.rasterizer " + " ".join(sys.argv[1:])}
    stem = a.out or f"rasterizer_{device}" + ("" if a.primitive == "gaussian" else f"_{a.primitive}")
    write_table(rows, meta, stem)
    plot(rows, stem)
    print(f"wrote {RESULTS / (stem + '.md')}")


if __name__ == "__main__":
    main()
