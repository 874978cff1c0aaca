"""How much each splat format keeps: file size against the standard PLY, and the PSNR of renders of the
round-tripped scene against renders of the original, from the run's test cameras.

    python -m sparsesplat.benchmarks.formats runs/lego runs/fern --out formats

For every run folder (a Gaussian ``scene.ply`` and ``cameras.json``) and format: write the scene, read it
back (our reader) and render it from up to ``--views`` test cameras; the PSNR is against the original
scene's render from the same camera (so it measures the format, not the reconstruction). Where PlayCanvas's
splat-transform is installed (``make tools``), it also converts our file to a PLY and that is rendered
too: the same PSNR from an independent reader. ``.spz`` is measured with the reference SH precision (5 bits
for degree 1, 4 for the rest, what Niantic's and PlayCanvas's writers use), with ours (6 and 5) and at 8 bits.

Results: benchmarks/results/<out>.md / .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _variants():
    from sparsesplat.rasterizer.splat_formats import FORMATS
    from sparsesplat.rasterizer.splat_formats.spz import write_spz

    out = [(s, s, FORMATS[s].write) for s in (".ply", ".compressed.ply", ".sog", ".splat")]
    out.insert(1, (".spz", ".spz (SH 5/4 bits, reference)", partial(write_spz, sh1_bits=5, sh_rest_bits=4)))
    out.insert(2, (".spz", ".spz (SH 6/5 bits, our default)", partial(write_spz, sh1_bits=6, sh_rest_bits=5)))
    out.insert(3, (".spz", ".spz (SH 8 bits)", partial(write_spz, sh1_bits=8, sh_rest_bits=8)))
    return out


def _test_cameras(run: Path, views: int):
    from sparsesplat.rasterizer import Cameras
    from sparsesplat.recon.view_run import read_cameras_json

    names, cams = read_cameras_json(run / "cameras.json")
    test = []
    if (run / "metrics.json").is_file():
        test = list(json.loads((run / "metrics.json").read_text()).get("test_views") or [])
    idx = [i for i, n in enumerate(names) if n in set(test)] or list(range(len(names)))
    idx = idx[:: max(1, len(idx) // views)][:views]
    return Cameras(cams.viewmats[idx], cams.Ks[idx], cams.width, cams.height), [names[i] for i in idx]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())


def measure_run(run: Path, views: int, backend: str) -> dict:
    from sparsesplat.benchmarks.splat_transform import find
    from sparsesplat.rasterizer import render
    from sparsesplat.rasterizer.splat_formats import read_splats
    from sparsesplat.recon.export_splats import ply_bytes

    raw = read_splats(run / "scene.ply")
    cams, names = _test_cameras(run, views)

    def image(r):
        with torch.no_grad():
            return render(r.activated(), cams, backend=backend, render_mode="RGB").colors

    reference = image(raw)
    tool = find()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, label, write in _variants():
            path = Path(tmp) / f"scene{suffix}"
            t0 = time.perf_counter()
            write(path, raw)
            t1 = time.perf_counter()
            back = read_splats(path)
            t2 = time.perf_counter()
            row = {"format": label, "bytes": path.stat().st_size,
                   "ratio_to_ply": path.stat().st_size / ply_bytes(len(raw.means), raw.sh.shape[1]),
                   "psnr": _psnr(image(back), reference), "write_s": t1 - t0, "read_s": t2 - t1,
                   "psnr_splat_transform": None}
            if tool is not None:
                converted = Path(tmp) / "via_splat_transform.ply"
                tool.convert(path, converted)
                row["psnr_splat_transform"] = _psnr(image(read_splats(converted)), reference)
            rows.append(row)
            print(f"  {run.name} {label}: {row['bytes'] / 1e6:.2f} MB ({row['ratio_to_ply']:.1%}), "
                  f"PSNR {row['psnr']:.2f} dB" + (f", via splat-transform {row['psnr_splat_transform']:.2f} dB"
                                                  if row["psnr_splat_transform"] is not None else ""), flush=True)
    return {"run": str(run), "splats": len(raw.means), "sh_coeffs": raw.sh.shape[1], "views": names,
            "size": [cams.width, cams.height], "splat_transform": tool is not None, "rows": rows}


def write_tables(results: list[dict], out: str, command: str) -> Path:
    lines = [f"# Splat formats: size and render fidelity ({platform.machine()} CPU)", "",
             f"Command: `{command}`  ",
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. PSNR: renders of the round-tripped scene "
             "against renders of the original scene from the same test cameras (mean over views; the format "
             "alone, not the reconstruction). 'via splat-transform': our file converted to PLY by PlayCanvas's "
             "splat-transform 3.10.2 and rendered, an independent reader's result.", ""]
    for r in results:
        lines += [f"## {Path(r['run']).name}: {r['splats']:,} Gaussians, SH degree {int(r['sh_coeffs'] ** 0.5) - 1}, "
                  f"{len(r['views'])} test views at {r['size'][0]}x{r['size'][1]}", "",
                  "| format | size | of the PLY | PSNR vs original | via splat-transform | write s | read s |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            st = "–" if row["psnr_splat_transform"] is None else f"{min(row['psnr_splat_transform'], 99):.2f}"
            lines.append(f"| {row['format']} | {row['bytes'] / 1e6:.2f} MB | {row['ratio_to_ply']:.1%} | "
                         f"{min(row['psnr'], 99):.2f} | {st} | {row['write_s']:.2f} | {row['read_s']:.2f} |")
        lines.append("")
    lines.append("PSNR is capped at 99 dB where the round trip is exact (.ply).")
    md = RESULTS / f"{out}.md"
    md.write_text("\n".join(lines) + "\n")
    (RESULTS / f"{out}.json").write_text(json.dumps(results, indent=1))
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders written by sparsesplat reconstruct (Gaussians)")
    ap.add_argument("--views", type=int, default=8, help="test cameras rendered per run")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--out", default="formats")
    args = ap.parse_args(argv)
    results = [measure_run(run, args.views, args.backend) for run in args.runs]
    command = "python -m sparsesplat.benchmarks.formats " + " ".join(
        [str(r) for r in args.runs] + (["--views", str(args.views)] if args.views != 8 else [])
        + (["--out", args.out] if args.out != "formats" else []))
    print(f"wrote {write_tables(results, args.out, command)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
