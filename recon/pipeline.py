"""``reconstruct``: scene -> initial points -> training -> evaluation -> run folder.

Run folder (DESIGN.md §4): config.yaml, cameras.json, transforms.json, sparse/0/ (COLMAP text), scene.ply
(standard 3DGS layout, user's frame), renders/ (test views beside ground truth), metrics.json, checkpoints/.
Every file is written atomically; a run folder that exists is refused unless --resume or --overwrite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import torch
import tyro

from sparsesplat.rasterizer import render

from .kinds import model_class
from .poses.learned_init import DEFAULT_DEPTH_MODEL
from .primitive_model import PrimitiveModel
from . import run_config
from .io import atomic_path, write_json
from .prior_hooks import PriorSettings, build_prior_hooks
from .cotraining import CoTrainer, second_field_config
from .scene_input import SceneInput
from .trainer import NonFiniteError, Trainer, TrainConfig, load_checkpoint, save_checkpoint


@dataclass
class ReconstructConfig(SceneInput):
    """Reconstruct a 3D scene from a few photos (their cameras are estimated) or from a posed dataset (COLMAP,
    Blender, LLFF, DTU) into a run folder. The input and output options, then --primitive and --full, are all
    most runs need: sparsesplat reconstruct PHOTOS -o runs/NAME [--protocol llff3] [--primitive triangle] [--full]"""

    primitive: Annotated[str, tyro.conf.arg(metavar="{gaussian,ges,triangle,convex}")] = "gaussian"
    """What the scene is made of: gaussian (3D Gaussians), ges (generalized exponential splats: Gaussians with a
    learned shape each, flat-topped or peaked), triangle (triangle splats, exports a mesh) or convex (smooth 3D
    convexes)."""
    full: bool = False
    """The papers' schedule (30k steps for Blender/Mip-NeRF360, 10k for LLFF/DTU): the same as --schedule full."""
    schedule: Literal["auto", "fast", "full"] = "auto"
    """Training schedule: fast (3000 steps, for a CPU), full (the papers' 10k/30k steps, for a GPU) or auto (full
    on a CUDA device, fast otherwise). Printed at the start; --iters sets the step count of either."""
    init: Annotated[str, tyro.conf.arg(metavar="{auto,mvs,sfm,hull,triangulate,random,dense,mono-depth}")] = "auto"
    """Initial points: auto (= mvs: the scene's SfM points, or SIFT matches triangulated with the known poses,
    plus plane-sweep multi-view stereo points from the training photos; else the visual hull when the photos
    carry masks (Blender alpha); else random), sfm, hull, triangulate, random, dense (sparse points + rectified
    SGBM stereo between neighbouring views), mono-depth (sparse points + the --depth-model's monocular depth
    aligned to them per view; needs its weights)."""
    poses: Literal["auto", "known", "estimate"] = "auto"
    """Camera poses: auto (the scene's, estimated for photos without poses), known, or estimate (ignore the
    scene's poses and estimate them from the training views; test views are then aligned for evaluation)."""
    refine_poses: Optional[bool] = None
    """Refine camera poses while training (default: on when poses were estimated)."""
    pose_lr: float = 1e-4
    """Adam learning rate of the per-camera pose corrections (radians / normalized units)."""
    pose_refine_start: int = 100
    """Start refining poses after this many steps (the first steps move primitives a lot)."""
    test_pose_steps: int = 100
    """Test-time pose alignment steps per test view when poses were estimated (0 disables)."""
    matcher_model: Annotated[Optional[str], tyro.conf.arg(metavar="MODEL")] = None
    """Estimated poses: a learned feature matcher used beside SIFT (transformers SuperPoint+LightGlue or SuperGlue,
    a local folder or a hub id such as ETH-CVG/lightglue_superpoint), for wide baselines (360-degree photo sets)."""
    device: Annotated[str, tyro.conf.arg(metavar="{auto,cpu,cuda}")] = "auto"
    """Where to train: auto (cuda when available), cpu or cuda."""
    resume: bool = False
    """Continue from the newest checkpoint in the run folder, with the run's own settings (its config.yaml); a
    setting given here other than its default replaces the run's (e.g. --resume --iters 6000 trains longer)."""
    nproc: int = 1
    """Processes that train together on this machine (data-parallel on torch.distributed: gloo on the CPU, NCCL
    with one GPU each): every step's --views-per-step views (default: one per process) are split between
    them and their gradients summed. Pays with many views or high resolution, not with 3 views (README). Under
    torchrun, leave it at 1: the processes are torchrun's."""
    export: tuple[str, ...] = ()
    """Also write the scene in these splat formats at the end (Gaussians only): spz, splat, compressed.ply,
    sog, e.g. --export spz sog or --export spz,sog (scene.spz, ... beside scene.ply; `sparsesplat export` does the
    same later, with more options)."""
    viewer: bool = False
    """Show training live in the web viewer (its address is printed)."""
    host: str = "127.0.0.1"
    """Viewer: interface to bind (0.0.0.0 to reach it from other machines)."""
    port: int = 8080
    """Viewer: port (the next free one when it is busy)."""
    viewer_wait: bool = True
    """Viewer: keep serving after training until Ctrl+C."""
    prior: tuple[Literal["none", "depth", "repair", "diffusion"], ...] = ("none",)
    """Sparse-view priors, combinable: depth (monocular depth losses), repair (per-scene repair network and
    pseudo views; no downloads), diffusion (single-step diffusion repair of pseudo views)."""
    depth_model: str = DEFAULT_DEPTH_MODEL
    """--prior depth and --init mono-depth: a transformers depth-estimation model, local folder or hub id."""
    diffusion_model: str = "stabilityai/sd-turbo"
    """--prior diffusion: a diffusers image-to-image pipeline, local folder or hub id."""
    priors: PriorSettings = field(default_factory=PriorSettings)
    train: Annotated[TrainConfig, tyro.conf.arg(name="")] = field(default_factory=TrainConfig)


class RunFolderExists(ValueError):
    pass


def _check_folder(cfg: ReconstructConfig) -> None:
    """Refuse an existing run folder before any work (unless --resume or --overwrite)."""
    out = cfg.out
    if out.exists() and any(out.iterdir()) and not (cfg.overwrite or cfg.resume):
        raise RunFolderExists(
            f"run folder {out} already exists; pass --resume to continue it or --overwrite to replace it"
        )


@contextlib.contextmanager
def _run_folder(cfg: ReconstructConfig, started: list):
    """The run folder appears only once there is something worth keeping: a start that fails (unreadable
    input, failed pose estimation, Ctrl+C before training) leaves no folder behind, and the folder that
    --overwrite replaces is put back. Training has started once ``started`` is non-empty."""
    out = cfg.out
    _check_folder(cfg)
    replaced = None
    if cfg.overwrite and out.exists():
        replaced = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        os.replace(out, replaced)
    fresh = not out.exists()
    try:
        yield
    except BaseException:
        if not started and fresh:
            shutil.rmtree(out, ignore_errors=True)
            if replaced is not None:
                os.replace(replaced, out)
                replaced = None
        raise
    finally:
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU here")
    return torch.device(name)


FAST_SCHEDULE = "fast"
FULL_SCHEDULE = "full"


def apply_full_schedule(cfg: ReconstructConfig) -> None:
    """The papers' GPU schedules (3DGS defaults, 10k steps for forward-facing LLFF/DTU, 30k otherwise), and every
    densification strategy's own window for that length: each settings dataclass in the tree with a
    ``full_schedule(iters)`` (every kind's strategy) says its own, so the preset covers a new kind by itself.
    Only settings still at their (fast, CPU) defaults change: an explicit --iters or refinement setting wins."""
    t, base = cfg.train, TrainConfig()
    long_run = cfg.protocol is None or cfg.protocol.startswith(("blender", "mip360"))

    def put(obj, ref, name: str, value) -> None:
        if getattr(obj, name) == getattr(ref, name):
            setattr(obj, name, value)

    put(t, base, "iters", 30_000 if long_run else 10_000)
    put(t, base, "sh_every", 1000)
    put(t, base, "checkpoint_every", 7000)
    for obj, ref in _with_full_schedule(t, base):
        for name, value in obj.full_schedule(t.iters).items():
            put(obj, ref, name, value)


def _with_full_schedule(obj, ref):
    """(settings, their defaults) for every dataclass below ``obj`` that has a ``full_schedule`` method."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            if hasattr(value, "full_schedule"):
                yield value, getattr(ref, f.name)
            yield from _with_full_schedule(value, getattr(ref, f.name))


def resolve_schedule(cfg: ReconstructConfig) -> str:
    """"full" (--full, --schedule full, or --schedule auto on a CUDA device) or "fast"."""
    if cfg.full or cfg.schedule == FULL_SCHEDULE:
        return FULL_SCHEDULE
    if cfg.schedule == "auto" and _device(cfg.device).type == "cuda":
        return FULL_SCHEDULE
    return FAST_SCHEDULE


def apply_schedule(cfg: ReconstructConfig) -> str:
    """Apply the schedule ``cfg`` resolves to (see ``resolve_schedule``); returns the line that says which."""
    name = resolve_schedule(cfg)
    if name == FULL_SCHEDULE:
        apply_full_schedule(cfg)
        why = "--full" if cfg.full or cfg.schedule == FULL_SCHEDULE else "the GPU default"
        other = "--schedule fast for the 3000-step CPU schedule"
    else:
        why = "--schedule fast" if cfg.schedule == FAST_SCHEDULE else "the CPU default"
        other = "--full for the papers' 10k/30k steps, meant for a GPU"
    return f"schedule: {name} ({why}), {cfg.train.iters} steps; {other}; --iters sets the steps of either"


def load_scene(cfg: ReconstructConfig):
    scene = cfg.load()
    if not scene.poses_known and cfg.poses == "known":
        raise ValueError(f"{cfg.data} holds photos without camera poses; leave --poses at auto to estimate them")
    if len(scene.train_ids) < 1:
        raise ValueError(f"{cfg.data}: the protocol {cfg.protocol} leaves no training views")
    return scene


@torch.no_grad()
def evaluate(model: PrimitiveModel, scene, cams_norm, ids: list[int], out_dir: Path, backend: str,
             appearance_fit: bool = False) -> dict:
    """Test-view metrics of the neutral render; ``appearance_fit`` adds the in-the-wild score (each view's
    colour transform fitted on its left half, PSNR on its right half: ``psnr_appearance_fit``)."""
    from .export import save_side_by_side
    from .metrics import evaluate_views

    if not ids:
        return {}
    g = model.activated()
    renders = []
    for i in ids:
        out = render(g, cams_norm[i], backend=backend, background=scene.background, render_mode="RGB")
        renders.append(out.colors[0].clamp(0, 1).cpu())
    renders = torch.stack(renders)
    refs = scene.images[ids]
    masks = scene.masks[ids] if (scene.masks is not None and (scene.source_format == "dtu" or scene.loss_masks)) \
        else None
    for k, i in enumerate(ids):
        save_side_by_side(out_dir / f"{i:03d}_{Path(scene.names[i]).stem}.png", renders[k].numpy(), refs[k].numpy())
    result = evaluate_views(renders, refs, masks, names=[scene.names[i] for i in ids])
    if appearance_fit:
        from .appearance import half_image_psnr

        for k, row in enumerate(result["views"]):
            row["psnr_appearance_fit"] = half_image_psnr(renders[k], refs[k], None if masks is None else masks[k])
        result["mean"]["psnr_appearance_fit"] = sum(r["psnr_appearance_fit"] for r in result["views"]) / len(ids)
    return {**result["mean"], "per_view": result["views"]}


def reconstruct(cfg: ReconstructConfig, progress=None, log=print, on_start=None, scene=None) -> dict:
    """Run the whole pipeline; returns the metrics written to metrics.json. ``on_start()`` is called when
    training begins (after loading, pose estimation and initialization). ``scene``: a ``SceneData`` already
    in memory (its own train/test split) instead of loading ``cfg.data``.

    Data-parallel (``cfg.nproc`` > 1, or under torchrun): this process is rank 0 and does everything above; the
    others only train in step with it and return {}."""
    from . import distributed

    joined = distributed.from_environment()  # torchrun
    world = joined.world_size if joined is not None else cfg.nproc
    if world > 1:
        _check_data_parallel(cfg, world)
        distributed.threads_per_process(world)
    if joined is not None and not joined.is_main:
        distributed.follow(joined)
        return {}
    if joined is None and cfg.nproc > 1:
        with distributed.launch(cfg.nproc, distributed.follow) as dp:
            return _reconstruct_main(cfg, progress, log, on_start, scene, dp)
    return _reconstruct_main(cfg, progress, log, on_start, scene, joined)


def _check_data_parallel(cfg: ReconstructConfig, world: int) -> None:
    """What data-parallel training does not cover says so before any work; views per step default to one per
    process."""
    for flag, on in (("--fields 2", cfg.train.fields == 2), ("--prior", any(p != "none" for p in cfg.prior)),
                     ("--viewer", cfg.viewer)):
        if on:
            raise ValueError(f"{flag} does not run data-parallel yet: leave out --nproc (or torchrun) or {flag}")
    if cfg.train.views_per_step == 1:
        cfg.train.views_per_step = world
    from .distributed import check_split

    check_split(cfg.train.views_per_step, world)


def _reconstruct_main(cfg: ReconstructConfig, progress, log, on_start, scene, dp) -> dict:
    schedule = apply_schedule(cfg)
    model_class(cfg.primitive)  # an unknown kind fails before anything is written
    if cfg.export:  # an unknown format, or a Gaussian-only one for another kind, fails before any work
        from .export_splats import export_suffixes, refuse_kind

        for suffix in export_suffixes(cfg.export):
            if suffix != ".ply":  # scene.ply is written in every kind's own layout anyway
                refuse_kind(cfg.primitive, f"--export {suffix.lstrip('.')}")
    started: list = []
    with _run_folder(cfg, started):
        return _reconstruct(cfg, progress, log, lambda: (started.append(True), on_start and on_start()), scene,
                            schedule, dp)


def _reconstruct(cfg: ReconstructConfig, progress, log, on_start, scene=None, schedule: str = "", dp=None) -> dict:
    from .export import write_cameras_json, write_colmap_text, write_transforms_json
    from .init import initial_points, normalize_scene
    from .poses import stage as pose_stage

    model_cls = model_class(cfg.primitive)
    out = cfg.out
    device = _device(cfg.device)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)

    scene = load_scene(cfg) if scene is None else scene
    log(scene.summary())
    if schedule:
        log(schedule)
    if cfg.train.appearance == "auto":
        cfg.train.appearance = "affine" if scene.source_format == "photos" else "none"
        if cfg.train.appearance == "affine":
            log("appearance: a colour transform per photo (the default for a folder of photos: exposure and white "
                "balance change from shot to shot); --appearance none turns it off")
    scene, posed = pose_stage.estimate_if_needed(cfg, scene, log)
    train_ids, test_ids = scene.train_ids, scene.test_ids
    init = initial_points(scene, train_ids, method=cfg.init, seed=cfg.train.seed,
                          options={"depth_model": cfg.depth_model, "device": str(device), "cache_dir": out / "depth"})
    log(f"initial points: {len(init.points)} ({init.method_used}){' - ' + init.message if init.message else ''}")
    norm = normalize_scene(scene.cameras[train_ids], init.points)
    cams_norm = norm.apply_cameras(scene.cameras).to(device=device)
    pts = norm.apply_points(init.points)

    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(run_config.dump(cfg))
    names = scene.names
    write_cameras_json(out / "cameras.json", names, scene.cameras, refined=None, transform=None,
                       focal_is_guess=scene.focal_is_guess)
    write_transforms_json(out / "transforms.json", names, scene.cameras)
    write_colmap_text(out, names, scene.cameras, init.points, init.colors)

    model = model_cls.create(pts, init.colors, cfg.train, norm.scene_scale, device=device)
    images = scene.images[train_ids].to(device)
    # a DTU scan's masks are the protocol's evaluation masks, never training input
    trains_on_masks = scene.masks is not None and not scene.loss_masks and scene.source_format != "dtu"
    masks = scene.masks[train_ids].to(device) if trains_on_masks else None
    loss_masks = scene.masks[train_ids].to(device) if scene.masks is not None and scene.loss_masks else None
    hooks = build_prior_hooks(cfg, model_cls, pts, init.colors, norm.scene_scale, images, cams_norm[train_ids],
                              scene.background.to(device), device, out, log)
    depth_targets = _depth_targets(init, norm, images.shape[1:3], device)
    trainer = Trainer(model, images, cams_norm[train_ids], scene.background.to(device), cfg.train, masks,
                      extra_losses=hooks.losses, depth_targets=depth_targets, loss_masks=loss_masks)
    if cfg.train.fields == 2:
        second = Trainer(model_cls.create(pts, init.colors, cfg.train, norm.scene_scale, device=device), images,
                         cams_norm[train_ids], scene.background.to(device), second_field_config(cfg.train), masks,
                         depth_targets=depth_targets, loss_masks=loss_masks)
        trainer = CoTrainer([trainer, second], cfg.train)
        log("two fields (CoR-GS co-pruning and co-regularization); the first is the result")
    trainer.camera_hook = pose_stage.make_refiner(cfg, posed, len(train_ids), device)
    ckpt_dir = out / "checkpoints"
    if cfg.resume:
        ckpts = sorted(ckpt_dir.glob("step_*.pt"))
        if ckpts:
            trainer.load_state_dict(load_checkpoint(ckpts[-1]))
            log(f"resumed from {ckpts[-1]} at step {trainer.step}")
        else:
            log(f"no checkpoint in {ckpt_dir}: starting from the beginning")
    if dp is not None:
        from .distributed import share

        share(dp, trainer)
        log(f"data-parallel: {dp.world_size} processes, {cfg.train.views_per_step} views per step")

    def checkpoint(tr: Trainer) -> None:
        save_checkpoint(tr, ckpt_dir / f"step_{tr.step:06d}.pt")
        for old in sorted(ckpt_dir.glob("step_*.pt"))[:-2]:  # keep the newest two
            old.unlink()

    from .view_run import chain_steps, start_live_viewer

    viewer = start_live_viewer(cfg, model, scene, cams_norm, pts, init.colors, log) if cfg.viewer else None
    on_start()
    t0 = time.time()
    try:
        trainer.train(on_step=chain_steps(progress, viewer and viewer.on_step), on_checkpoint=checkpoint,
                      should_stop=viewer.should_stop if viewer else (lambda: False))
    except KeyboardInterrupt:
        checkpoint(trainer)
        raise KeyboardInterrupt(f"interrupted at step {trainer.step}; checkpoint saved, continue with --resume")
    except NonFiniteError:
        checkpoint(trainer)
        raise
    train_seconds = time.time() - t0
    checkpoint(trainer)
    prior_summary = hooks.finish()

    model.export(out / "scene.ply", norm)
    refined = pose_stage.refined_cameras(trainer.camera_hook, cams_norm, train_ids)
    if refined is not None:
        write_cameras_json(out / "cameras.json", names, cams_norm, refined=refined, transform=norm.T,
                           focal_is_guess=scene.focal_is_guess)
    cams_eval = pose_stage.evaluation_cameras(cfg, posed, model, scene, cams_norm if refined is None else refined,
                                             test_ids, log)
    if trainer.appearance is not None:
        from .appearance import write_appearance_json

        write_appearance_json(out / "appearance.json", [names[i] for i in train_ids], trainer.appearance.transforms())
    metrics = evaluate(model, scene, cams_eval, test_ids, out / "renders", cfg.train.backend,
                       appearance_fit=trainer.appearance is not None)
    summary = {
        "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"), "lpips": metrics.get("lpips"),
        "psnr_masked": metrics.get("psnr_masked"), "ssim_masked": metrics.get("ssim_masked"),
        **({"psnr_appearance_fit": metrics["psnr_appearance_fit"]} if "psnr_appearance_fit" in metrics else {}),
        "train_seconds": train_seconds, "num_primitives": len(model), "steps": trainer.step,
        "peak_memory_mb": _peak_memory_mb(device), "init_points": len(init.points), "init_method": init.method_used,
        "test_views": [scene.names[i] for i in test_ids], "per_view": metrics.get("per_view"),
        "poses": None if posed is None else posed.summary(),
        "prior": [p for p in cfg.prior if p != "none"], **prior_summary,
        **({"coprune_removed": list(trainer.pruned)} if isinstance(trainer, CoTrainer) else {}),
    }
    write_json(summary, out / "metrics.json")
    if cfg.export:
        from .export_splats import export_run_formats

        export_run_formats(out, cfg.export, log=log)
    if viewer is not None:
        from .view_run import finish_live_viewer

        finish_live_viewer(viewer, cfg.viewer_wait, log)
    return summary


def _depth_targets(init, norm, size: tuple[int, int], device: torch.device) -> Optional[torch.Tensor]:
    """(V,H,W,1) stereo depth of the training views in normalized units at the image size (0 = unknown), or
    None when the initializer gave no depth maps."""
    if not init.view_depths:
        return None
    d = torch.as_tensor(np.stack(init.view_depths), dtype=torch.float32)[:, None] / norm.scale
    d = torch.nn.functional.interpolate(d, size=tuple(size), mode="nearest")
    return d.permute(0, 2, 3, 1).contiguous().to(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
