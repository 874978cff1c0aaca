"""Load a run folder for the viewer (``sparsesplat view RUN``) and wire the viewer into training.

The viewer package knows nothing of run folders or trainers; this module reads ``scene.ply``,
``cameras.json``, the initial points in ``sparse/0`` and, where the scene folder named in ``config.yaml`` is
still there, the photos for the camera thumbnails, and hands plain data to ``sparsesplat.viewer``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from sparsesplat.rasterizer import Cameras
from sparsesplat.rasterizer.scene_io import read_scene_ply, readable_kinds
from sparsesplat.viewer.scene import ViewerScene, make_thumbnail

THUMB = 128  # longer side of frustum thumbnails, pixels
def read_cameras_json(path: Path) -> tuple[list[str], Cameras]:
    """Names and ``Cameras`` (user frame) of a run's cameras.json; cameras of other sizes than the first are
    scaled to its size (frusta only need the shape)."""
    try:
        doc = json.loads(path.read_text())
        entries = doc["cameras"]
        W, H = int(entries[0]["width"]), int(entries[0]["height"])
        views, Ks, names = [], [], []
        for e in entries:
            sx, sy = W / float(e["width"]), H / float(e["height"])
            views.append(e["viewmat"])
            Ks.append([[e["fx"] * sx, 0.0, e["cx"] * sx], [0.0, e["fy"] * sy, e["cy"] * sy], [0.0, 0.0, 1.0]])
            names.append(str(e["name"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path} is not a readable cameras.json ({type(e).__name__}: {e}); "
                         "it is written by `sparsesplat reconstruct`") from None
    cams = Cameras(torch.tensor(views, dtype=torch.float32), torch.tensor(Ks, dtype=torch.float32), W, H)
    return names, cams


def read_colmap_points(model: Path) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(M,3) points and (M,3) colours in [0,1] of a COLMAP model's points3D.txt (or .bin via pycolmap)."""
    txt = model / "points3D.txt"
    if txt.is_file():
        rows = [ln.split() for ln in txt.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not rows:
            return None, None
        a = np.array([[float(v) for v in r[1:7]] for r in rows])
        return a[:, :3], a[:, 3:6] / 255.0
    if (model / "points3D.bin").is_file():
        import pycolmap

        rec = pycolmap.Reconstruction(str(model))
        pts = list(rec.points3D.values())
        if not pts:
            return None, None
        return np.array([p.xyz for p in pts]), np.array([p.color for p in pts]) / 255.0
    return None, None


def _scene_source(run: Path) -> tuple[Optional[object], Optional[object]]:
    """The run's settings (config.yaml read back; None when it cannot be) and the listing of the scene folder
    they name, when that folder still exists."""
    from .run_config import RunConfigError, read_run_config

    try:
        cfg = read_run_config(run) if (run / "config.yaml").is_file() else None
    except RunConfigError:  # only decoration and the primitive kind come from it
        cfg = None
    if cfg is None or not Path(cfg.data).is_dir():
        return cfg, None
    try:
        from sparsesplat.datasets.loading import LISTERS, detect_format

        fmt = detect_format(cfg.data, cfg.protocol) if cfg.format == "auto" else cfg.format
        return cfg, LISTERS[fmt](cfg.data)
    except Exception:  # the photos are only decoration: a moved or changed scene folder is not an error
        return cfg, None


def _thumbnails(names: list[str], listing, prims, cams: Cameras, background) -> list[np.ndarray]:
    """The training photos, small; where a photo cannot be found, a render of the scene from that camera."""
    paths = {v.name: v.path for v in listing.views} if listing is not None else {}
    from sparsesplat.viewer.render_view import RenderSettings, render_cameras

    small = cams.scaled(THUMB / max(cams.width, cams.height))
    out = []
    for i, name in enumerate(names):
        p = paths.get(name)
        try:
            if p is not None:
                img = Image.open(p)
                if img.mode in ("RGBA", "LA", "P"):  # Blender photos: composite on the scene's background
                    base = Image.new("RGBA", img.size, tuple(int(round(255 * c)) for c in background) + (255,))
                    img = Image.alpha_composite(base, img.convert("RGBA"))
                out.append(make_thumbnail(np.asarray(img.convert("RGB")), THUMB))
                continue
        except OSError:
            pass
        out.append(render_cameras(prims, small[i], RenderSettings(background=background)).image)
    return out


def load_splat_file_for_viewer(path: Path) -> ViewerScene:
    """A splat file of any supported format (.ply, .splat, .spz, .compressed.ply, .sog) as a ``ViewerScene``."""
    from sparsesplat.rasterizer.splat_formats import read_splats

    prims = read_splats(path).activated()
    return ViewerScene(get_primitives=lambda: prims, title=f"sparsesplat: {path.name}")


def _looks(path: Path) -> dict:
    """Each training photo's colour transform from a run's appearance.json ({} without one, or unreadable)."""
    if not path.is_file():
        return {}
    from .appearance import read_appearance_json

    try:
        return {name: m.numpy() for name, m in read_appearance_json(path).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def load_run_for_viewer(run) -> ViewerScene:
    """Read a run folder (or a single splat file) into a ``ViewerScene`` (everything in the user's frame, as
    the run stores it)."""
    run = Path(run)
    if run.is_file():
        return load_splat_file_for_viewer(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run} does not exist; give the run folder `sparsesplat reconstruct -o` wrote, or a "
                                "splat file (.ply, .splat, .spz, .compressed.ply, .sog)")
    ply = run / "scene.ply"
    if not ply.is_file():
        raise ValueError(f"{run} has no scene.ply; is it a finished run folder? (an interrupted run can be "
                         "finished with `sparsesplat reconstruct ... --resume`)")
    cfg, listing = _scene_source(run)
    from .run_config import run_primitive

    kind = run_primitive(run)
    if kind not in readable_kinds():
        raise ValueError(f"{ply} holds {kind} primitives, which `sparsesplat view` cannot read yet "
                         f"(it reads {', '.join(readable_kinds())})")
    prims = read_scene_ply(ply, kind)
    names, cams = read_cameras_json(run / "cameras.json") if (run / "cameras.json").is_file() else ([], None)
    points, colors = read_colmap_points(run / "sparse" / "0")
    background = (1.0, 1.0, 1.0) if listing is not None and listing.white_background else (0.0, 0.0, 0.0)
    test_names: list[str] = []
    if (run / "metrics.json").is_file():
        try:
            test_names = list(json.loads((run / "metrics.json").read_text()).get("test_views") or [])
        except ValueError:
            pass
    thumbs = _thumbnails(names, listing, prims, cams, background) if cams is not None else None
    return ViewerScene(get_primitives=lambda: prims, cameras=cams, names=names, thumbnails=thumbs,
                       test_names=test_names, points=points, point_colors=colors, background=background,
                       looks=_looks(run / "appearance.json"),
                       title=f"sparsesplat: {run.name}")


# ------------------------------------------------------------------------------------------ live training


def start_live_viewer(cfg, model, scene, cams_norm: Cameras, points_norm, point_colors, log=print):
    """Serve the viewer for a training run (``reconstruct --viewer``); returns the ``ViewerApp``.

    Everything is in the trainer's normalized frame. ``get_primitives`` is called from the training thread
    (``ViewerApp.on_step``), so the copy it takes never sees a half-updated model.
    """
    from sparsesplat.viewer.app import ViewerApp

    @torch.no_grad()
    def current():
        return detached_copy(model.activated())

    names = list(scene.names)
    test = [names[i] for i in scene.test_ids]
    thumbs = [make_thumbnail(img, THUMB) for img in scene.images]
    viewer_scene = ViewerScene(
        get_primitives=current, cameras=cams_norm.to("cpu"), names=names, thumbnails=thumbs, test_names=test,
        points=np.asarray(points_norm), point_colors=np.asarray(point_colors),
        background=tuple(float(c) for c in scene.background), title=f"sparsesplat: {Path(cfg.out).name}",
        total_steps=cfg.train.iters,
    )
    app = ViewerApp(viewer_scene, host=cfg.host, port=cfg.port, live=True, video_dir=Path(cfg.out))
    log(f"viewer: {app.url}")
    return app


def detached_copy(prims):
    """A copy of any primitive object with every tensor attribute detached and cloned (so the viewer's
    render threads never see the optimizer change it)."""
    out = copy.copy(prims)
    for k, v in vars(prims).items():
        if isinstance(v, torch.Tensor):
            setattr(out, k, v.detach().clone())
    return out


def chain_steps(*callbacks):
    """One ``on_step`` calling each non-None callback in turn."""
    cbs = [cb for cb in callbacks if cb is not None]

    def on_step(stats) -> None:
        for cb in cbs:
            cb(stats)

    return on_step


def finish_live_viewer(app, keep_open: bool, log=print) -> None:
    """After training: show the final scene; keep serving until Ctrl+C when ``keep_open``; then close."""
    try:
        app.training_done("training finished")
        if keep_open:
            log(f"viewer still running at {app.url}; press Ctrl+C to quit")
            import time

            while True:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


def serve_run(run, host: str = "127.0.0.1", port: int = 8080) -> None:
    """``sparsesplat view``: serve a run folder until Ctrl+C."""
    import time

    from sparsesplat.viewer.app import ViewerApp

    scene = load_run_for_viewer(run)
    app = ViewerApp(scene, host=host, port=port, video_dir=Path(run) if Path(run).is_dir() else Path(run).parent)
    import signal
    import threading

    try:
        if threading.current_thread() is threading.main_thread():
            # Ctrl+C (and a plain kill) end the command even where the parent started it with SIGINT ignored,
            # as shells do for background jobs
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        # announced inside the try, so a Ctrl+C as soon as the address appears ends the command cleanly (a CI
        # run under load once exited 130 here)
        print(f"viewer: {app.url}  ({len(scene.names)} cameras; Ctrl+C to quit)", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _close_within(app, 10.0)


def _close_within(app, seconds: float) -> None:
    """Stop the server, but never let a stuck server thread keep Ctrl+C from ending the command."""
    import threading

    closer = threading.Thread(target=app.close, daemon=True)
    closer.start()
    closer.join(seconds)
    if closer.is_alive():
        print(f"viewer: the server did not stop within {seconds:.0f} s; exiting anyway", flush=True)
