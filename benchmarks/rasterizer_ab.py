"""CPU rasterizer A/B: the compositing kernels of several source trees, or of one tree built with other
compiler flags, timed in one process on a trained scene, interleaved view by view.

Timings on a shared machine drift by 20-30% over minutes (other tenants, clock changes); two separate runs
cannot resolve a 5% change. Here every build renders the same views in turn, so drift hits them alike and the
ratio to the first build is what this reports.

    # this checkout against an older one (e.g. `git worktree add /tmp/old <commit>`)
    python -m sparsesplat.benchmarks.rasterizer_ab runs/fern /tmp/old .
    # one tree built for other instruction sets: TREE@FLAGS
    python -m sparsesplat.benchmarks.rasterizer_ab runs/fern ".@-march=native -mno-avx512f" ".@-mno-avx"

The scene is a run folder of `sparsesplat reconstruct` (its scene.ply and cameras.json): a trained scene has
the sizes, overlaps and opacities that decide the speed, which random Gaussians do not. Each build is a
separate extension module (``ab_cpu<i>``) compiled from the tree's ``rasterizer/csrc/cpu``; forward is
``rasterize_fwd`` and backward ``rasterize_bwd`` with fixed random output gradients (projection and SH
colours are done once, outside the timing). Writes ``benchmarks/results/<out>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from .results_file import write_results_md
from .sparse_views import RESULTS


def parse_build(spec: str) -> tuple[Path, list[str] | None]:
    """``TREE`` or ``TREE@FLAGS``: a source tree and the compiler flags for it (None: the project's own)."""
    tree, sep, flags = spec.partition("@")
    root = Path(tree).expanduser().resolve()
    if not (root / "rasterizer" / "csrc" / "cpu").is_dir():
        raise SystemExit(f"{tree}: no rasterizer/csrc/cpu here; give the root of a sparsesplat checkout")
    return root, (flags.split() if sep else None)


def build(i: int, root: Path, flags: list[str] | None, cache: Path):
    """Compile the tree's CPU kernels as module ``ab_cpu<i>`` (cached per build index under ``cache``)."""
    from torch.utils import cpp_extension

    from sparsesplat.rasterizer.build import _native_flags, sources

    csrc = root / "rasterizer" / "csrc"
    out = cache / f"ab_cpu{i}"
    out.mkdir(parents=True, exist_ok=True)
    cflags = ["-O3", "-fno-math-errno", "-fopenmp", *(_native_flags() if flags is None else flags)]
    return cpp_extension.load(name=f"ab_cpu{i}", sources=[str(p) for p in sources("cpu", csrc)],
                              extra_include_paths=[str(csrc)], extra_cflags=cflags, extra_ldflags=["-fopenmp"],
                              build_directory=str(out), verbose=False)


def scene_inputs(run: Path):
    """Per training/test view of the run: the rasterizer's inputs (projected Gaussians, colours) and fixed
    output gradients."""
    from sparsesplat.rasterizer import Cameras
    from sparsesplat.rasterizer.backends import cpu
    from sparsesplat.rasterizer.kinds.gaussian.compiled_stages import stages
    from sparsesplat.rasterizer.primitives import sanitize
    from sparsesplat.rasterizer.render import view_colors
    from sparsesplat.rasterizer.scene_io import read_scene_ply
    from sparsesplat.recon.view_run import read_cameras_json

    g = read_scene_ply(run / "scene.ply")
    project_gaussians, _ = stages("cpu")
    _, cams = read_cameras_json(run / "cameras.json")
    W, H = cams.width, cams.height
    gen = torch.Generator().manual_seed(0)
    views = []
    with torch.no_grad():
        s = sanitize(g)
        means, quats, scales, opac, sh, colors = s.means, s.quats, s.scales, s.opacities, s.sh, s.colors
        for i in range(len(cams)):
            vm, K = cams.viewmats[i:i + 1], cams.Ks[i:i + 1]
            p = project_gaussians(means, quats, scales, opac, vm, K, W, H)
            rgb = view_colors(sh, colors, means, Cameras(vm, K, W, H), None, cpu)
            ins = [t.contiguous() for t in (p.means2d, p.conics, rgb, p.opacities, p.depths)]
            views.append((ins, p.radii.int().contiguous(),
                          torch.rand(1, H, W, 4, generator=gen), torch.rand(1, H, W, 1, generator=gen)))
    return len(g.means), W, H, views


def _gaussian_args(ext) -> tuple:
    """What a build's kernels take after their arguments of old: nothing, or (since GES) the empty shapes
    tensor that selects Gaussians."""
    params = (ext.rasterize_fwd.__doc__ or "").split("->")[0]  # pybind's signature line
    return (torch.empty(0),) if params.count("torch.Tensor") >= 7 else ()


def time_builds(exts, views, W: int, H: int, tile: int, repeats: int) -> list[dict]:
    fwd = [0.0] * len(exts)
    bwd = [0.0] * len(exts)
    extra = [_gaussian_args(ext) for ext in exts]
    for _ in range(repeats):
        for ins, radii, v_feats, v_alphas in views:
            for e, ext in enumerate(exts):
                t0 = time.perf_counter()
                # what the backward takes of the forward: the binning (row masks too since they exist), last, T_final
                _, _, _, *binning = ext.rasterize_fwd(*ins, radii, W, H, tile, *extra[e])
                t1 = time.perf_counter()
                ext.rasterize_bwd(*ins, W, H, tile, *binning, v_feats, v_alphas, *extra[e])
                t2 = time.perf_counter()
                fwd[e] += t1 - t0
                bwd[e] += t2 - t1
    n = repeats * len(views)
    return [{"fwd_ms": 1000 * f / n, "bwd_ms": 1000 * b / n, "fwd_speedup": fwd[0] / f, "bwd_speedup": bwd[0] / b,
             "fwd_bwd_speedup": (fwd[0] + bwd[0]) / (f + b)} for f, b in zip(fwd, bwd)]


def _rev(root: Path) -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True).stdout.strip()
        return out or "?"
    except (OSError, subprocess.CalledProcessError):
        return "?"


def write_tables(rows: list[dict], meta: dict, stem: str) -> None:
    lines = [f"# CPU rasterizer A/B ({meta['machine']}, {meta['threads']} threads)", "",
             f"`{meta['command']}` on {meta['date']}, torch {meta['torch']}. Scene: `{meta['run']}`, "
             f"{meta['gaussians']} Gaussians, {meta['width']}x{meta['height']}, {meta['views']} views x "
             f"{meta['repeats']} repeats, tile {meta['tile']}; builds timed in turn in one process, mean per view.",
             "", "| build | flags | fwd ms | bwd ms | fwd speed-up | bwd speed-up | fwd+bwd speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tree']} ({r['rev']}) | `{r['flags']}` | {r['fwd_ms']:.1f} | {r['bwd_ms']:.1f} | "
                     f"{r['fwd_speedup']:.2f}x | {r['bwd_speedup']:.2f}x | {r['fwd_bwd_speedup']:.2f}x |")
    lines += ["", "Speed-ups are against the first row, measured in the same process.", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results_md(RESULTS / f"{stem}.md", lines)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder of `sparsesplat reconstruct` (scene.ply, cameras.json)")
    ap.add_argument("builds", nargs="+", help="TREE or TREE@FLAGS; the first is the baseline of the ratios")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="OpenMP/torch threads (default: all cores)")
    ap.add_argument("--tile", type=int, default=16)
    ap.add_argument("--cache", type=Path, default=None,
                    help="build folder (default: $TORCH_EXTENSIONS_DIR or ~/.cache/sparsesplat/.../rasterizer_ab)")
    ap.add_argument("--out", default="rasterizer_ab", help="results file stem in benchmarks/results/")
    args = ap.parse_args()
    for name in ("scene.ply", "cameras.json"):
        if not (args.run / name).is_file():
            raise SystemExit(f"{args.run}: no {name}; give the folder a `sparsesplat reconstruct` run wrote")
    if args.threads:
        torch.set_num_threads(args.threads)
    from sparsesplat.rasterizer.build import default_cache_root

    cache = args.cache or Path(os.environ.get("TORCH_EXTENSIONS_DIR") or default_cache_root()) / "rasterizer_ab"
    specs = [parse_build(b) for b in args.builds]
    exts = []
    for i, (root, flags) in enumerate(specs):
        print(f"building {root} {'(project flags)' if flags is None else ' '.join(flags)} ...", flush=True)
        exts.append(build(i, root, flags, cache))
    n, W, H, views = scene_inputs(args.run)
    rows = time_builds(exts, views, W, H, args.tile, args.repeats)
    from sparsesplat.rasterizer.build import _native_flags

    for (root, flags), r in zip(specs, rows):
        r.update(tree=str(root), rev=_rev(root), flags=" ".join(_native_flags() if flags is None else flags))
        print(f"{r['tree']} [{r['flags']}]: fwd {r['fwd_ms']:.1f} ms, bwd {r['bwd_ms']:.1f} ms, "
              f"speed-up fwd {r['fwd_speedup']:.2f}x bwd {r['bwd_speedup']:.2f}x")
    from sparsesplat.rasterizer.build import cpu_features

    model = next((ln.split(":", 1)[1].strip() for ln in cpu_features().splitlines() if ln.startswith("model name")),
                 platform.machine())
    meta = {"machine": f"{model}, {os.cpu_count()} cores", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "run": str(args.run), "gaussians": n,
            "width": W, "height": H, "views": len(views), "repeats": args.repeats, "tile": args.tile,
            "command": "python -m sparsesplat.benchmarks.rasterizer_ab " + " ".join(
                [str(args.run), *(f'"{b}"' if " " in b else b for b in args.builds)])}
    write_tables(rows, meta, args.out)
    print(f"wrote {RESULTS / (args.out + '.md')}")


if __name__ == "__main__":
    main()
