"""Sparse-view quality on the standard scenes: PSNR / SSIM / LPIPS, time and primitives, mean ± std over
seeds, beside published numbers.

    python -m sparsesplat.benchmarks.sparse_views                      # fern llff3, lego blender8, DTU dtu3; 2 seeds
    python -m sparsesplat.benchmarks.sparse_views --seeds 0 1 2 --workers 2 --out quality --plot   # on Ray, 2 at a time
    python -m sparsesplat.benchmarks.sparse_views --workers 16 --gpus-per-run 1 --ray-address HEAD:6379   # a cluster
    python -m sparsesplat.benchmarks.sparse_views --scenes fern --seeds 0 1 2 -- --iters 3000
    python -m sparsesplat.benchmarks.sparse_views -- --full            # the papers' schedules (GPU)
    python -m sparsesplat.benchmarks.sparse_views --scenes lego dtu -- --fields 2 --primitive ges
    python -m sparsesplat.benchmarks.sparse_views --scenes fern --prior none repair   # each prior vs none
    python -m sparsesplat.benchmarks.sparse_views --scenes fern --prior repair -- --priors.repair.steps 0

Every run of the grid takes the settings of ``sparsesplat reconstruct``: the options after ``--`` are that
command's (any of them, as ``sparsesplat reconstruct --help`` lists them), the rest its defaults, except that
each run gets its scene, protocol and seed, ``--checkpoint-every 0`` unless given, and a named schedule (fast
unless ``--full`` or ``--schedule full``: never left to the device). The options before ``--`` say what to run
(scenes, seeds, the priors to compare, ``--cap``) and how (Ray, results).

Scenes are looked up in ../shared/data (or $SPARSESPLAT_DATA); ``example`` is the bundled example (a smoke test of
a sweep or a cluster). Results: benchmarks/results/<stem>.md/.json (or --results DIR); run folders under
<results>/runs/ (not committed).

With ``--workers N`` (or ``--ray-address``) the grid runs as Ray tasks (benchmarks/sweep.py), N at a time, each asking
for ``--threads-per-run`` CPU threads or ``--gpus-per-run`` GPUs; a run that fails or whose worker dies is retried
``--retries`` times, then reported by name, and the tables are written from the runs that finished, the missing
ones listed. Runs finished before with the same settings are taken as they are with ``--reuse``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from .results_file import write_results_md

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

SCENES = {  # name -> (path under the data folder, protocol)
    "fern": ("llff/fern", "llff3"),
    "lego": ("nerf_synthetic/lego", "blender8"),
    "dtu": ("dtu/scan37", "dtu3"),
    "example": (str(REPO / "examples" / "synthetic_forward"), "llff6"),  # bundled: absolute, not under the data folder
}

# Published PSNR averaged over ALL scenes of each benchmark (LLFF: 8 scenes, Blender: 8 scenes), so a single
# scene's number is only indicative. The figures are those the project's issue tracker quotes from the
# papers' main comparison tables; SSIM is left out rather than quoted from memory.
PUBLISHED = {
    "llff3": [
        ("3DGS (random init)", 15.52),
        ("FSGS (Zhu et al., ECCV 2024)", 20.43),
        ("CoR-GS (Zhang et al., ECCV 2024)", 20.45),
        ("DropGaussian (Park et al., CVPR 2025)", 20.76),
        ("Binocular3DGS (Han et al., NeurIPS 2024)", 21.44),
    ],
    "blender8": [
        ("3DGS", 22.23),
        ("FSGS (Zhu et al., ECCV 2024)", 24.64),
        ("DNGaussian (Li et al., CVPR 2024)", 24.31),
        ("CoR-GS (Zhang et al., ECCV 2024)", 24.43),
        ("DropGaussian (Park et al., CVPR 2025)", 25.42),
    ],
    # DTU: object-masked PSNR, all 15 test scans of the protocol (the PSNR column is compared with masked PSNR)
    "dtu3": [
        ("DNGaussian (Li et al., CVPR 2024)", 18.91),
        ("CoR-GS (Zhang et al., ECCV 2024)", 19.21),
        ("Binocular3DGS + dropout, learned matcher (Han et al., NeurIPS 2024)", 21.05),
    ],
}


def results_dir(args) -> Path:
    """Where the tables and run folders go: --results, else benchmarks/results."""
    return Path(args.results) if getattr(args, "results", None) else RESULTS


def data_root() -> Path:
    return Path(os.environ.get("SPARSESPLAT_DATA", REPO.parent / "shared" / "data"))


def reconstruct_settings(flags: list[str]):
    """The ``sparsesplat reconstruct`` options ``flags`` (what follows ``--``) as the ``ReconstructConfig`` every
    run of the grid starts from (its data and output folder are set per run)."""
    import tyro

    from sparsesplat.recon.pipeline import ReconstructConfig

    cfg = tyro.cli(ReconstructConfig, args=["SCENE", "-o", "RUN", *flags],
                   prog="python -m sparsesplat.benchmarks.sparse_views [grid options] --")
    if cfg.prior != ("none",):
        sys.exit("give priors as the benchmark's --prior (before --): each is a row of the comparison")
    return cfg


def template(args):
    """The settings every run starts from: ``args.template`` (the options after ``--``), else the CLI defaults."""
    from sparsesplat.recon.pipeline import ReconstructConfig

    cfg = getattr(args, "template", None)
    return cfg if cfg is not None else ReconstructConfig(data=Path("SCENE"), out=Path("RUN"))


def run_config(scene: str, seed: int, args, prior: str = "none"):
    """The ``ReconstructConfig`` of one run of the grid (its folder: <results>/runs/<stem>_<scene>_s<seed>[_prior])."""
    from sparsesplat.recon.trainer import TrainConfig

    rel, protocol = SCENES[scene]
    runs = results_dir(args) / "runs"
    out = runs / f"{args.out}_{scene}_s{seed}" if prior == "none" else runs / f"{args.out}_{scene}_s{seed}_{prior}"
    cfg = copy.deepcopy(template(args))
    cfg.data, cfg.out, cfg.protocol, cfg.overwrite = data_root() / rel, out, protocol, True
    cfg.prior = tuple(prior.split("+"))
    cfg.train.seed = seed
    if cfg.train.checkpoint_every == TrainConfig().checkpoint_every:
        cfg.train.checkpoint_every = 0
    if getattr(args, "cap", None):  # matched primitive budgets across kinds
        train = cfg.train
        train.mcmc.cap_max = train.triangle.strategy.cap_max = train.convex.strategy.max_primitives = args.cap
    cfg.schedule = "full" if cfg.full or cfg.schedule == "full" else "fast"  # named, not left to the device
    return cfg


def settings_line(args) -> str:
    """What the runs used, for the table: the schedule and every setting the options after ``--`` changed from
    the CLI defaults ("train.fields=2, ..."), then the grid's cap and priors."""
    from sparsesplat.recon.run_config import changed_settings

    cfg = template(args)
    changed = [f"{name}={json.dumps(value, separators=(',', ':'))}" for name, value in changed_settings(cfg).items()
               if name not in ("full", "schedule")]
    schedule = "full" if cfg.full or cfg.schedule == "full" else "fast"
    parts = [f"schedule={schedule}", *changed]
    if getattr(args, "cap", None):
        parts.append(f"cap={args.cap}")
    return ", ".join(parts + [f"priors={' '.join(getattr(args, 'prior', ['none']))}"])


def reused(scene: str, seed: int, args, prior: str = "none") -> Optional[dict]:
    """With --reuse, the row of a finished run folder made with the same settings; else None."""
    if not getattr(args, "reuse", False):
        return None
    cfg = run_config(scene, seed, args, prior)
    if not _finished_with(cfg.out, cfg):
        return None
    print(f"reusing the finished run {cfg.out}", flush=True)
    return _row(scene, seed, prior, json.loads((cfg.out / "metrics.json").read_text()))


def _row(scene: str, seed: int, prior: str, metrics: dict) -> dict:
    metrics.pop("per_view", None)
    metrics.pop("prior", None)
    return {"scene": scene, "protocol": SCENES[scene][1], "seed": seed, "prior": prior, **metrics}


def run_one(scene: str, seed: int, args, prior: str = "none") -> dict:
    """Train and evaluate one run of the grid (or take it as it is, with --reuse) and return its table row."""
    row = reused(scene, seed, args, prior)
    return row if row is not None else _train_one(scene, seed, args, prior)


def _train_one(scene: str, seed: int, args, prior: str) -> dict:
    """Train and evaluate one run of the grid (no --reuse check: the caller has made it)."""
    from sparsesplat.recon.pipeline import reconstruct

    t0 = time.time()
    m = reconstruct(run_config(scene, seed, args, prior), log=lambda *_: None)
    m["wall_seconds"] = time.time() - t0
    return _row(scene, seed, prior, m)


def _finished_with(out: Path, cfg) -> bool:
    """Whether ``out`` holds a finished run made with the same settings as ``cfg`` (its output folder and
    overwrite flag aside): then ``--reuse`` takes its metrics instead of training again."""
    from sparsesplat.recon.pipeline import ReconstructConfig
    from sparsesplat.recon.run_config import RunConfigError, config_dict, read_run_config

    if not ((out / "metrics.json").is_file() and (out / "config.yaml").is_file()):
        return False
    try:  # read back into this version's settings: what the run predates takes today's defaults
        run = read_run_config(out)
    except RunConfigError:
        return False
    if run.unknown_settings:  # options this version no longer has: not the same work
        return False
    saved, now = config_dict(run), config_dict(cfg)
    default = config_dict(ReconstructConfig(data=cfg.data, out=cfg.out))
    for d in (saved, now):
        d.pop("out", None), d.pop("overwrite", None)
    return _same_run(saved, now, default)


def _same_run(saved: dict, now: dict, default: dict) -> bool:
    """saved == now, except that an option the saved config does not have (added to the code since) counts as
    equal when ``now`` leaves it at its default, and an ``auto`` now matches what the run resolved it to (the
    pipeline writes the resolved value, e.g. ``appearance: none`` for a posed dataset): the run did the same work."""
    for k in set(saved) | set(now):
        if k not in saved:
            if now[k] != default.get(k):
                return False
        elif k not in now:
            return False
        elif isinstance(saved[k], dict) and isinstance(now[k], dict):
            if not _same_run(saved[k], now[k], default.get(k) or {}):
                return False
        elif saved[k] != now[k] and now[k] != "auto":
            return False
    return True


def _run_job(job) -> dict:
    """A run of ``run_grid``'s to-do list (its --reuse check already made in the driver)."""
    (scene, seed, prior), args = job
    return _train_one(scene, seed, args, prior)


def _job_name(job) -> str:
    scene, seed, prior = job
    return f"{scene} seed {seed}" + ("" if prior == "none" else f" prior {prior}")


def _print_row(r: dict) -> None:
    print(json.dumps({k: r.get(k) for k in ("scene", "seed", "prior", "psnr", "ssim", "psnr_masked", "train_seconds",
                                            "num_primitives")}), flush=True)


def run_grid(jobs: list, args) -> tuple[list[dict], dict]:
    """Every (scene, seed, prior) of ``jobs``: one by one here, or as Ray tasks with --workers / --ray-address.
    Returns the rows of the runs that finished and ``{name: error}`` of those that did not."""
    rows, failed, todo = [], {}, {}
    for scene, seed, prior in jobs:  # finished runs are taken here, never sent to a worker
        job = (scene, seed, prior)
        row = reused(scene, seed, args, prior)
        if row is not None:
            rows.append(row)
        else:
            todo[_job_name(job)] = (job, args)
    if not (args.workers > 1 or args.ray_address):
        for name, payload in todo.items():
            row = _run_job(payload)
            _print_row(row)
            rows.append(row)
        return rows, failed
    from .sweep import SweepError, run_sweep

    try:
        outcome = run_sweep(todo, _run_job, workers=args.workers, address=args.ray_address,
                            cpus_per_task=args.threads_per_run, gpus_per_task=args.gpus_per_run,
                            retries=args.retries, on_result=lambda _name, row: _print_row(row))
    except SweepError as e:
        sys.exit(str(e))
    retried = {n: k - 1 for n, k in outcome.attempts.items() if k > 1}
    if retried:
        print("retried: " + ", ".join(f"{n} ({k}x)" for n, k in retried.items()), flush=True)
    return rows + list(outcome.results.values()), outcome.failed


def _ms(values, digits: int = 2) -> str:
    """mean ± std (or the single value) with ``digits`` decimals."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _settings(text: str) -> dict[str, str]:
    """A table's settings line ("primitive=gaussian, cap=None, ...") as a dict."""
    return dict(part.split("=", 1) for part in text.split(", ") if "=" in part)


def write_tables(rows: list[dict], meta: dict, stem: str, results: Optional[Path] = None) -> None:
    """<stem>.json and <stem>.md: a table per scene (mean ± std over seeds, published figures beside); the notes
    under the .md's marker line are kept (results_file.py)."""
    results = results or RESULTS
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# Sparse-view quality ({meta['machine']})", "", f"Command: `{meta['command']}`  ",
             f"torch {meta['torch']}, {meta['date']}; settings: {meta['settings']}", ""]
    for scene in dict.fromkeys(r["scene"] for r in rows):
        rs = [r for r in rows if r["scene"] == scene]
        protocol = rs[0]["protocol"]
        seeds = len({r["seed"] for r in rs})
        masked = any(r.get("psnr_masked") is not None for r in rs)
        extra_head, extra_rule = (" masked PSNR | masked SSIM |", "---|---|") if masked else ("", "")
        lines += [f"## {scene} ({protocol}), {seeds} seed(s)", "",
                  f"| method | PSNR | SSIM |{extra_head} LPIPS | train s | primitives | init points |",
                  f"|---|---|---|{extra_rule}---|---|---|---|"]
        for prior, variant in dict.fromkeys((r.get("prior", "none"), r.get("variant", "")) for r in rs):
            rp = [r for r in rs if (r.get("prior", "none"), r.get("variant", "")) == (prior, variant)]
            label = "sparsesplat" + ("" if prior == "none" else f" + prior {prior}") + (f", {variant}" if variant else " (this run)")
            extra = (f" {_ms([r.get('psnr_masked') for r in rp])} | {_ms([r.get('ssim_masked') for r in rp], 3)} |"
                     if masked else "")
            lines.append(
                f"| **{label}** | {_ms([r['psnr'] for r in rp])} | {_ms([r['ssim'] for r in rp], 3)} |{extra}"
                f" {_ms([r['lpips'] for r in rp], 3)} | {_ms([r['train_seconds'] for r in rp], 0)} "
                f"| {_ms([r['num_primitives'] for r in rp], 0)} | {_ms([r['init_points'] for r in rp], 0)} ({rp[0]['init_method']}) |"
            )
        for name, p in PUBLISHED.get(protocol, []):
            cells = f" | | {p:.2f} | |" if masked else f" {p:.2f} | |"
            lines.append(f"| {name} — published, all-scene mean |{cells} | | | |")
        if seeds > 1:
            per_seed = ", ".join(f"seed {r['seed']}{'' if r.get('prior', 'none') == 'none' else ' ' + r['prior']}"
                                 f"{' (' + r['variant'] + ')' if r.get('variant') else ''}: "
                                 f"{r['psnr']:.2f} / {r['ssim']:.3f}"
                                 f"{'' if r.get('psnr_masked') is None else ' / ' + format(r['psnr_masked'], '.2f')}"
                                 for r in rs)
            lines += ["", f"Per seed (PSNR / SSIM{' / masked PSNR' if masked else ''}): {per_seed}."]
        lines.append("")
    if meta.get("included"):
        lines += ["Rows taken from earlier runs (their own tables give their commands; a row whose settings differ "
                  "from this run's is labelled with the difference): "
                  + ", ".join(f"`{f}`" for f in meta["included"]) + ".", ""]
    if meta.get("missing"):
        lines += ["Missing runs (failed every attempt; the rows above are from the runs that finished): "
                  + "; ".join(f"{name}: {error}" for name, error in meta["missing"].items()) + ".", ""]
    write_results_md(results / f"{stem}.md", lines)


def plot(rows: list[dict], stem: str, results: Optional[Path] = None) -> None:
    """Bar chart beside the table: held-out PSNR (object-masked for DTU) per scene, each seed a dot, and the
    published methods' all-scene means as lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    scenes = list(dict.fromkeys(r["scene"] for r in rows))
    fig, axes = plt.subplots(1, len(scenes), figsize=(4.2 * len(scenes), 3.6), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        rs = [r for r in rows if r["scene"] == scene]
        key = "psnr_masked" if any(r.get("psnr_masked") is not None for r in rs) else "psnr"
        labels = list(dict.fromkeys(r.get("variant") or r.get("prior", "none") for r in rs))
        for k, label in enumerate(labels):
            vals = [r[key] for r in rs if (r.get("variant") or r.get("prior", "none")) == label and r.get(key) is not None]
            if vals:
                ax.bar(k, statistics.mean(vals), color="tab:blue", alpha=0.6)
                ax.plot([k] * len(vals), vals, "k.")
        for j, (name, p) in enumerate(PUBLISHED.get(rs[0]["protocol"], [])):
            ax.axhline(p, color=f"C{j + 1}", ls="--", lw=1, label=name.split(" (")[0])
        ax.set_xticks(range(len(labels)), [lbl if len(lbl) < 18 else lbl[:16] + "…" for lbl in labels], fontsize=7)
        ax.set_title(f"{scene} ({rs[0]['protocol']})")
        ax.set_ylabel("masked PSNR (dB)" if key == "psnr_masked" else "PSNR (dB)")
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig((results or RESULTS) / f"{stem}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--cap", type=int, default=None,
                    help="one primitive cap for every kind (MCMC Gaussians, triangles, convexes): matched budgets")
    ap.add_argument("--prior", nargs="+", default=["none"],
                    help="priors to compare, each none or a '+'-joined combination of depth, repair, diffusion")
    ap.add_argument("--workers", type=int, default=1,
                    help="runs at once as Ray tasks (1 and no --ray-address: one by one in this process)")
    ap.add_argument("--ray-address", default=None,
                    help="join this Ray cluster (e.g. HEAD:6379 or ray://HEAD:10001) instead of starting Ray here")
    ap.add_argument("--threads-per-run", type=int, default=None,
                    help="CPU threads each Ray task asks for (default: the cores divided by --workers)")
    ap.add_argument("--gpus-per-run", type=float, default=0, help="GPUs each Ray task asks for (e.g. 1)")
    ap.add_argument("--retries", type=int, default=2,
                    help="Ray: start a failed run (an error, or a worker that died) again this many times")
    ap.add_argument("--results", default=None, help="folder of the tables and run folders (default: benchmarks/results)")
    ap.add_argument("--out", default="sparse_views", help="results file stem")
    ap.add_argument("--plot", action="store_true", help="also write benchmarks/results/<stem>.png (needs matplotlib)")
    ap.add_argument("--reuse", action="store_true",
                    help="take the metrics of a finished run folder made with the same settings instead of re-running")
    ap.add_argument("--include", nargs="*", default=[],
                    help="earlier result stems (benchmarks/results/<stem>.json) whose rows join this table, e.g. "
                         "seeds run before with the same settings")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:split])
    args.template = reconstruct_settings(argv[split + 1:])
    if any(s != "example" for s in args.scenes) and not data_root().is_dir():
        sys.exit(f"scenes not found in {data_root()}; set SPARSESPLAT_DATA to the folder holding llff/ and nerf_synthetic/")
    if args.threads_per_run is None:
        args.threads_per_run = max(1, (os.cpu_count() or 1) // max(1, args.workers))
    results = results_dir(args)
    jobs = [(scene, seed, prior) for scene in args.scenes for seed in args.seeds for prior in args.prior]
    rows, failed = run_grid(jobs, args)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    meta = {"machine": dev, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "missing": failed,
            "command": "python -m sparsesplat.benchmarks.sparse_views " + " ".join(sys.argv[1:]),
            "settings": settings_line(args)}
    ours = _settings(meta["settings"])
    for stem in args.include:
        earlier = json.loads((results / f"{stem}.json").read_text())
        theirs = _settings(earlier["meta"]["settings"])
        variant = ", ".join(f"{k}={theirs.get(k, 'default')}" for k in dict.fromkeys([*theirs, *ours])
                            if k != "priors" and theirs.get(k, "default") != ours.get(k, "default"))
        rows += [{**r, "variant": r.get("variant") or variant} for r in earlier["rows"] if r["scene"] in args.scenes]
        meta.setdefault("included", []).append(f"{stem}.json ({earlier['meta']['settings']})")
    rows.sort(key=lambda r: (list(SCENES).index(r["scene"]), r.get("prior", "none") != "none", r.get("variant", ""),
                             r["seed"]))
    write_tables(rows, meta, args.out, results)
    if args.plot and rows:
        plot(rows, args.out, results)
    print(f"wrote {results / (args.out + '.md')}")
    if failed:
        sys.exit(f"{len(failed)} of {len(jobs)} runs failed: " + "; ".join(f"{n}: {e}" for n, e in failed.items()))


if __name__ == "__main__":
    main()
