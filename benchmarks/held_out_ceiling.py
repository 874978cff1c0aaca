"""What the held-out views of a sparse-view run could reach from its training photos, and where the run falls short.

    python -m sparsesplat.benchmarks.held_out_ceiling RUN REF [--out held_out_ceiling_dtu]

RUN is a protocol run folder (``sparsesplat reconstruct DATA --protocol dtu3 -o RUN``); REF a run of the same scene
trained on every view (``sparsesplat reconstruct DATA -o REF``), whose rendered depth stands in for the true
surface. Over each test view's object pixels (its mask where the scene has object masks, else every pixel; both
where REF is opaque):

- seen: the pixel's surface point (REF's depth) is within ``tol`` of REF's depth in some training view, i.e. a
  training photo shows it;
- copy-photo: each seen point takes its colour from the nearest training photo that shows it (its nearest pixel),
  a yardstick for a method with exact geometry that paints with the training photos' colours. Not a bound: a model
  that blends several photos and places detail between pixels can beat it (fern llff3); where the test photo shows
  the point differently from every training photo (highlights, shading), neither can follow it;
- the run's own render on the same pixels, split by whether its depth is within ``tol`` of REF's.

Results: benchmarks/results/<out>.md / .json (the notes under the table are kept).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from .results_file import write_results_md
from .sparse_views import RESULTS


def surface_points(depth: torch.Tensor, K: torch.Tensor, viewmat: torch.Tensor, keep: torch.Tensor):
    """World points of the pixels ``keep`` (H,W bool) at ``depth`` (H,W, camera z) of a camera (K, world->camera
    ``viewmat``), pixel centres at +0.5; returns (P,3) points and their (rows, cols)."""
    v, u = torch.nonzero(keep, as_tuple=True)
    z = depth[v, u].to(K.dtype)
    x = ((u + 0.5) - K[0, 2]) / K[0, 0] * z
    y = ((v + 0.5) - K[1, 2]) / K[1, 1] * z
    R, t = viewmat[:3, :3].to(K.dtype), viewmat[:3, 3].to(K.dtype)
    return (torch.stack([x, y, z], 1) - t) @ R, (v, u)


def copy_photo_colors(points: torch.Tensor, sources, tol: float):
    """Colour of each point (P,3) in the first photo of ``sources`` that shows it, and how many show it.

    sources: (image (H,W,3), depth (H,W) of that camera's surface, K, viewmat), nearest first. A photo shows a
    point when it projects inside and its depth there is within ``tol`` (relative) of the point's; the pixel is
    the nearest one. Returns colours (P,3) (NaN where no photo shows the point) and counts (P,)."""
    colors = torch.full((len(points), 3), float("nan"), dtype=torch.float32)
    count = torch.zeros(len(points), dtype=torch.int64)
    for img, depth, K, V in sources:
        H, W = depth.shape
        q = points @ V[:3, :3].to(points.dtype).T + V[:3, 3].to(points.dtype)
        z = q[:, 2]
        front = z > 0
        zs = torch.where(front, z, torch.ones_like(z))
        u = torch.floor(q[:, 0] / zs * K[0, 0] + K[0, 2]).long()
        v = torch.floor(q[:, 1] / zs * K[1, 1] + K[1, 2]).long()
        inside = front & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        d = torch.zeros_like(z)
        d[inside] = depth[v[inside], u[inside]].to(z.dtype)
        shows = inside & ((z - d).abs() < tol * z)
        first = shows & torch.isnan(colors[:, 0])
        colors[first] = img[v[first], u[first]].float()
        count += shows.long()
    return colors, count


def _db(sum_sq: float, n: int) -> float:
    """PSNR of a mean squared error given as its sum over n values (NaN for none)."""
    return float(-10 * math.log10(max(sum_sq / n, 1e-12))) if n else float("nan")


def _psnr(sq_err: torch.Tensor) -> float:
    return _db(float(sq_err.sum()), sq_err.numel())


@torch.no_grad()
def analyse(run: Path, ref: Path, tol: float = 0.01, backend: str = "cpu") -> dict:
    """Per test view of ``run`` and pooled: seen share, the run's PSNR on seen and unseen pixels, the copy-photo
    PSNR on seen pixels, and both split by whether the run's depth is within ``tol`` of ``ref``'s."""
    from sparsesplat.rasterizer import render
    from sparsesplat.rasterizer.scene_io import read_scene_ply
    from sparsesplat.recon.run_config import read_run_config
    from sparsesplat.recon.view_run import read_cameras_json

    scene = read_run_config(run).load()
    names, cams = read_cameras_json(run / "cameras.json")
    rnames, rcams = read_cameras_json(ref / "cameras.json")
    model, reference = read_scene_ply(run / "scene.ply"), read_scene_ply(ref / "scene.ply")

    def surface(m, c):
        out = render(m, c, backend=backend, render_mode="RGB+ED")
        return out.colors[0].clamp(0, 1), out.depths[0, ..., 0], out.alphas[0, ..., 0]

    def ref_cam(name):
        return rcams[rnames.index(name)]

    train = [scene.names[i] for i in scene.train_ids]
    train_depth = {n: surface(reference, ref_cam(n))[1] for n in train}
    centres = rcams.centers.double()
    sums = {k: 0.0 for k in ("model_seen", "model_unseen", "copy", "model_ok", "copy_ok", "model_off", "copy_off")}
    counts = {k: 0 for k in ("pixels", "seen", "ok")}
    rows = []
    for i in scene.test_ids:
        name = scene.names[i]
        rc = ref_cam(name)
        _, depth, alpha = surface(reference, rc)
        keep = alpha > 0.9
        if scene.masks is not None and not scene.loss_masks:
            keep &= scene.masks[i, ..., 0] > 0.5
        points, (v, u) = surface_points(depth, rc.Ks[0].double(), rc.viewmats[0].double(), keep)
        here = centres[rnames.index(name)]
        near_first = sorted(train, key=lambda n: float((centres[rnames.index(n)] - here).norm()))
        sources = [(scene.images[scene.train_ids[train.index(n)]], train_depth[n], ref_cam(n).Ks[0].double(),
                    ref_cam(n).viewmats[0].double()) for n in near_first]
        copied, shown = copy_photo_colors(points, sources, tol)
        photo = scene.images[i][v, u]
        img, mdepth, malpha = surface(model, cams[names.index(name)])
        err = ((img[v, u] - photo) ** 2).mean(-1)
        seen = shown > 0
        ok = seen & ((mdepth[v, u] - depth[v, u]).abs() < tol * depth[v, u]) & (malpha[v, u] > 0.5)
        off = seen & ~ok
        cerr = ((copied - photo) ** 2).mean(-1)
        parts = dict(model_seen=err[seen], model_unseen=err[~seen], copy=cerr[seen], model_ok=err[ok],
                     copy_ok=cerr[ok], model_off=err[off], copy_off=cerr[off])
        for k, e in parts.items():
            sums[k] += float(e.sum())
        counts["pixels"] += len(err)
        counts["seen"] += int(seen.sum())
        counts["ok"] += int(ok.sum())
        rows.append(dict(view=name, pixels=len(err), seen=float(seen.float().mean()) if len(err) else 0.0,
                         model=_psnr(err), model_seen=_psnr(parts["model_seen"]),
                         model_unseen=_psnr(parts["model_unseen"]), copy_photo=_psnr(parts["copy"])))
    n_seen, n_ok = counts["seen"], counts["ok"]

    def pooled(k, n):
        return _db(sums[k], n)

    summary = dict(
        test_views=len(rows), seen_share=n_seen / max(counts["pixels"], 1), depth_ok_share_of_seen=n_ok / max(n_seen, 1),
        model_seen=pooled("model_seen", n_seen), model_unseen=pooled("model_unseen", counts["pixels"] - n_seen),
        copy_photo_seen=pooled("copy", n_seen), model_depth_ok=pooled("model_ok", n_ok),
        copy_photo_depth_ok=pooled("copy_ok", n_ok), model_depth_off=pooled("model_off", n_seen - n_ok),
        copy_photo_depth_off=pooled("copy_off", n_seen - n_ok),
        mean_view_model_seen=float(np.nanmean([r["model_seen"] for r in rows])),
        mean_view_copy_photo=float(np.nanmean([r["copy_photo"] for r in rows])),
        mean_view_model=float(np.nanmean([r["model"] for r in rows])),
    )
    return {"run": str(run), "reference": str(ref), "tol": tol, "summary": summary, "views": rows}


def table(result: dict) -> list[str]:
    s = result["summary"]
    lines = [
        "# Held-out views against what the training photos allow",
        "",
        f"Command: `python -m sparsesplat.benchmarks.held_out_ceiling {result['run']} {result['reference']}` "
        f"(depth tolerance {result['tol']:.0%})",
        "",
        "| pixels | share | run's PSNR | copy-photo PSNR |",
        "|---|---|---|---|",
        f"| seen by a training photo | {s['seen_share']:.1%} of the object | {s['model_seen']:.2f} | "
        f"{s['copy_photo_seen']:.2f} |",
        f"| seen, run's depth within tolerance | {s['depth_ok_share_of_seen']:.1%} of the seen | "
        f"{s['model_depth_ok']:.2f} | {s['copy_photo_depth_ok']:.2f} |",
        f"| seen, run's depth off | {1 - s['depth_ok_share_of_seen']:.1%} of the seen | {s['model_depth_off']:.2f} | "
        f"{s['copy_photo_depth_off']:.2f} |",
        f"| seen by no training photo | {1 - s['seen_share']:.1%} of the object | {s['model_unseen']:.2f} | – |",
        "",
        f"Per-view means (the protocol's averaging): run {s['mean_view_model']:.2f} over the object, "
        f"{s['mean_view_model_seen']:.2f} on its seen pixels; copy-photo {s['mean_view_copy_photo']:.2f} on the seen "
        "pixels. Pooled rows above: PSNR of the pixels' mean squared error.",
        "",
        "| view | object pixels | seen | run | run, seen | run, unseen | copy-photo, seen |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["views"]:
        lines.append(f"| {r['view']} | {r['pixels']} | {r['seen']:.1%} | {r['model']:.2f} | {r['model_seen']:.2f} | "
                     f"{r['model_unseen']:.2f} | {r['copy_photo']:.2f} |")
    return lines + [""]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a protocol run folder (its config.yaml, cameras.json, scene.ply)")
    ap.add_argument("reference", type=Path, help="a run of the same scene trained on every view")
    ap.add_argument("--tol", type=float, default=0.01, help="relative depth agreement (default 0.01)")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--out", default="held_out_ceiling", help="results file stem under benchmarks/results")
    args = ap.parse_args(argv)
    for folder in (args.run, args.reference):
        for f in ("config.yaml", "cameras.json", "scene.ply"):
            if not (folder / f).is_file():
                raise SystemExit(f"{folder} is not a finished run folder: {f} is missing")
    result = analyse(args.run, args.reference, args.tol, args.backend)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    write_results_md(RESULTS / f"{args.out}.md", table(result))
    print("\n".join(table(result)[:12]))


if __name__ == "__main__":
    main()
