"""Poses from unposed sparse photos against ground truth, and the dense initialization they give.

    python -m sparsesplat.benchmarks.poses                              # lego 8/20, fern 3/20
    python -m sparsesplat.benchmarks.poses --cases fern3 fern20 --out poses_fern

Each case loads a posed scene, hides its poses and runs ``recon.poses.estimate_poses`` on the training
views with the dataset's intrinsics given as a prior (as an EXIF focal would be; focal not refined).
Reported: views registered, which path, median / max rotation error (deg) and camera-centre error (% of the
ground-truth camera extent = max distance of a camera centre to their mean) after a Sim(3) alignment
(rotation from the orientations, scale and translation from the centres), sparse points, time. Then the
dense initialization (``recon.poses.dense``) on the estimated cameras: points, time, and accuracy: (a) per
pixel of the training views, the relative difference between its depth and the depth of the same stereo run
with the ground-truth cameras, after one global scale (``depth_agreement``); (b) for lego, the fraction of points that project inside the object
silhouette (alpha > 0.5) in 8 held-out test views (points on the object project inside every silhouette).
Results: benchmarks/results/<out>.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .results_file import write_results_md

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
DIETNERF8 = [26, 86, 2, 55, 75, 93, 16, 73]
CASES = {"lego8": ("lego", 8), "lego20": ("lego", 20), "fern3": ("fern", 3), "fern20": ("fern", 20)}


def data_root() -> Path:
    return Path(os.environ.get("SPARSESPLAT_DATA", REPO.parent / "shared" / "data"))


def load_case(name: str, lego_size: int):
    """(training scene, held-out silhouette views or None)."""
    from sparsesplat.datasets import blender, load
    from sparsesplat.datasets.loading import materialize

    scene_name, n = CASES[name]
    if scene_name == "lego":
        listing = blender.list_scene(data_root() / "nerf_synthetic/lego", downscale=(lego_size, lego_size))
        train = listing.splits["train"]
        pick = DIETNERF8 if n == 8 else np.round(np.linspace(0, len(train) - 1, n)).astype(int).tolist()
        ids = [train[i] for i in pick]
        test = listing.splits["test"][::25][:8]
        both = materialize(listing, ids + test, ids, test, (lego_size, lego_size))
        return both.subset(both.train_ids), both.subset(both.test_ids)
    scene = load(data_root() / "llff/fern", protocol=f"llff{n}" if n < 20 else None, downscale=8)
    return scene.subset(scene.train_ids), None


def nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(b).query(a)[0]


def depth_agreement(P_est, cams_est, P_ref, cams_ref) -> np.ndarray:
    """Per pixel seen by both clouds: |s z_est - z_ref| / z_ref, where z are the nearest depths of each cloud
    in each view (its own cameras) and s the median ratio over all views: alignment-free, so a small scale
    error of the poses does not swamp it as a distance in the reference frame would (fern's depths are
    ~10x its camera extent)."""
    from sparsesplat.recon.poses.dense import _depth_map

    Ve, Ke = cams_est.viewmats.double().numpy(), cams_est.Ks.double().numpy()
    Vr, Kr = cams_ref.viewmats.double().numpy(), cams_ref.Ks.double().numpy()
    W, H = cams_ref.width, cams_ref.height
    ze, zr = [], []
    for k in range(len(Vr)):
        De = _depth_map(Ve[k], Ke[k], W, H, np.asarray(P_est, np.float64))
        Dr = _depth_map(Vr[k], Kr[k], W, H, np.asarray(P_ref, np.float64))
        both = np.isfinite(De) & np.isfinite(Dr)
        ze.append(De[both]), zr.append(Dr[both])
    ze, zr = np.concatenate(ze), np.concatenate(zr)
    s = np.median(zr / ze)
    return np.abs(s * ze - zr) / zr


def silhouette_fraction(points: np.ndarray, held) -> float:
    V, K = held.cameras.viewmats.double().numpy(), held.cameras.Ks.double().numpy()
    alpha = held.masks.numpy()[..., 0]
    inside = np.ones(len(points), bool)
    for k in range(len(V)):
        Xc = points @ V[k, :3, :3].T + V[k, :3, 3]
        z = np.maximum(Xc[:, 2], 1e-6)
        u = np.floor(K[k, 0, 0] * Xc[:, 0] / z + K[k, 0, 2]).astype(int)
        v = np.floor(K[k, 1, 1] * Xc[:, 1] / z + K[k, 1, 2]).astype(int)
        ok = (u >= 0) & (u < held.width) & (v >= 0) & (v < held.height)
        a = np.zeros(len(points))
        a[ok] = alpha[k, v[ok], u[ok]]
        inside &= a > 0.5
    return float(inside.mean()) if len(points) else float("nan")


def run_case(name: str, args) -> dict:
    from sparsesplat.recon.poses.dense import dense_points
    from sparsesplat.recon.poses.colmap_sfm import FeatureConfig
    from sparsesplat.recon.poses.estimate import PoseConfig
    from sparsesplat.recon.poses.scene_poses import pose_scene

    scene, held = load_case(name, args.lego_size)
    row = {"case": name, "views": len(scene), "size": f"{scene.width}x{scene.height}"}
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cfg = PoseConfig(refine_focal="never", features=FeatureConfig(matcher_model=args.matcher_model))
        posed = pose_scene(scene, cfg, log=lambda s: print(f"  {s}", flush=True))
    row["pose_seconds"] = time.time() - t0
    e, est = posed.errors, posed.estimate
    row.update(registered=len(est.registered), method=est.method, tried=est.tried, sparse_points=len(est.points),
               median_rotation_deg=e["median_rotation_deg"], max_rotation_deg=e["max_rotation_deg"],
               median_centre_pct=e["median_centre_pct"], max_centre_pct=e["max_centre_pct"],
               dropped=[scene.names[i] for i in est.dropped])
    # per view, and with the Sim(3) fitted to the views that agree (a wrongly registered view is named)
    from sparsesplat.recon.poses.align import robust_pose_errors

    ref_V = scene.cameras.viewmats.double().numpy()[est.registered]
    rb = robust_pose_errors(est.viewmats, ref_V)
    reg_names = [scene.names[i] for i in est.registered]
    row.update(rotation_deg_per_view=dict(zip(reg_names, e["rotation_deg"].tolist())),
               centre_pct_per_view=dict(zip(reg_names, e["centre_pct"].tolist())),
               robust_median_rotation_deg=rb["median_rotation_deg"], robust_max_rotation_deg=rb["max_rotation_deg"],
               robust_median_centre_pct=rb["median_centre_pct"], robust_max_centre_pct=rb["max_centre_pct"],
               wrong_views=[n for n, ok in zip(reg_names, rb["inliers"]) if not ok])
    if args.no_dense:
        return row
    s = posed.scene
    masks = scene.masks[est.registered].numpy() if scene.masks is not None else None
    t0 = time.time()
    dense = dense_points(s.images.numpy(), s.cameras, est.points, masks)
    row["dense_seconds"] = time.time() - t0
    row["dense_points"] = len(dense.points)
    gt = scene.subset(est.registered)
    pts_gt_frame = posed.to_reference.apply_points(dense.points.astype(np.float64))
    ref = dense_points(gt.images.numpy(), gt.cameras, pts_gt_frame, masks)  # the same stereo with true cameras
    row["reference_dense_points"] = len(ref.points)
    if len(ref.points) and len(dense.points):
        rel = depth_agreement(dense.points, s.cameras, ref.points, gt.cameras)
        row["dense_depth_rel_err_median"] = float(np.median(rel))
        row["dense_depth_within_1pct"] = float(np.mean(rel < 0.01))
    if held is not None:
        row["dense_in_silhouette"] = silhouette_fraction(pts_gt_frame, held)
        row["reference_in_silhouette"] = silhouette_fraction(ref.points.astype(np.float64), held)
    return row


def _f(v, d=2):
    return "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


def write_tables(rows, meta, stem):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# Poses from unposed sparse views ({meta['machine']})", "", f"Command: `{meta['command']}`  ",
             f"{meta['date']}; pycolmap {meta['pycolmap']}; {meta['settings']}", "",
             "| case | size | registered | path (views per path tried) | median / max rot. err (deg) "
             "| median / max centre err (% extent) | sparse pts | pose s | dense pts | dense s "
             "| dense depth vs true-pose stereo: median rel. err / within 1% | dense in held-out silhouettes (true-pose stereo) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tried = ", ".join(f"{k} {v if v >= 0 else '–'}" for k, v in r["tried"].items())
        sil = (f"{r['dense_in_silhouette']:.3f} ({r['reference_in_silhouette']:.3f})"
               if "dense_in_silhouette" in r else "–")
        lines.append(
            f"| {r['case']} | {r['size']} | {r['registered']}/{r['views']} | {r['method']} ({tried}) "
            f"| {_f(r['median_rotation_deg'])} / {_f(r['max_rotation_deg'])} "
            f"| {_f(r['median_centre_pct'])} / {_f(r['max_centre_pct'])} | {r['sparse_points']} "
            f"| {_f(r['pose_seconds'], 0)} | {r.get('dense_points', '–')} | {_f(r.get('dense_seconds'), 0)} "
            f"| {_f(r.get('dense_depth_rel_err_median'), 4)} / {_f(r.get('dense_depth_within_1pct'), 3)} | {sil} |")
    dropped = [f"{r['case']}: {', '.join(r['dropped'])}" for r in rows if r["dropped"]]
    if dropped:
        lines += ["", "Dropped (not registered): " + "; ".join(dropped)]
    robust = [f"{r['case']}: {len(r['wrong_views'])} wrong ({', '.join(r['wrong_views']) or 'none'}); the rest "
              f"{_f(r['robust_median_rotation_deg'])} / {_f(r['robust_max_rotation_deg'])} deg, "
              f"{_f(r['robust_median_centre_pct'])} / {_f(r['robust_max_centre_pct'])}%"
              for r in rows if "wrong_views" in r]
    if robust:
        lines += ["", "Registered views the robust alignment rejects (error > 5 deg or 5% after a Sim(3) fitted to the "
                  "views that agree), and the errors of the rest (median / max): " + "; ".join(robust) + "."]
    write_results_md(RESULTS / f"{stem}.md", lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--lego-size", type=int, default=800, help="lego resolution for SfM (800 = native)")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--matcher-model", default=None,
                    help="learned matcher beside SIFT (LightGlue folder or hub id, e.g. ETH-CVG/lightglue_superpoint)")
    ap.add_argument("--out", default="poses")
    args = ap.parse_args()
    if not data_root().is_dir():
        sys.exit(f"scenes not found in {data_root()}; set SPARSESPLAT_DATA")
    import pycolmap

    rows = []
    for name in args.cases:
        print(f"== {name}", flush=True)
        r = run_case(name, args)
        print(json.dumps(r), flush=True)
        rows.append(r)
        meta = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs)",
                "date": time.strftime("%Y-%m-%d"), "pycolmap": pycolmap.__version__,
                "command": "python -m sparsesplat.benchmarks.poses " + " ".join(sys.argv[1:]),
                "settings": f"lego at {args.lego_size}px, fern images_8 (504x378); dataset intrinsics as prior, "
                            "focal fixed; default FeatureConfig / MapperConfig"
                            + (f"; learned matcher {args.matcher_model} beside SIFT" if args.matcher_model else "")}
        write_tables(rows, meta, args.out)  # after every case, so a long run leaves partial results
    print(f"wrote {RESULTS / (args.out + '.md')}")


if __name__ == "__main__":
    main()
