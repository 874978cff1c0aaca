"""sparsesplat: real-time 3D scenes from a few photos (reconstruct, view, export, poses, inspect, info).

The commands are generated from dataclasses with tyro.

Usage errors are condensed to one line (``sparsesplat: error: ...``) with exit code 2; errors about the
user's data (a ``ValueError`` raised while loading, such as ``DatasetError``) print their message and exit 1.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional, Union

import tyro

from sparsesplat import __version__

from .export_splats import ExportCommand
from .pipeline import ReconstructConfig
from .poses.command import PosesCommand


@dataclass
class Inspect:
    """Load a scene (photos, COLMAP, Blender, LLFF or DTU), print a summary and write a contact sheet."""

    data: tyro.conf.Positional[Path]
    """Scene folder."""
    out: Annotated[Path, tyro.conf.arg(aliases=["-o"])] = Path("runs/inspect")
    """Output folder for contact_sheet.png."""
    format: Annotated[str, tyro.conf.arg(metavar="{auto,photos,colmap,blender,llff,dtu}")] = "auto"
    """Scene format: auto (detected from the folder's files), photos, colmap, blender, llff or dtu."""
    protocol: Annotated[Optional[str], tyro.conf.arg(metavar="NAME")] = None
    """Sparse-view protocol choosing the training and test views: llff3, llff6, llff9, blender8, dtu3, dtu6,
    dtu9, mip360-12 or mip360-24."""
    downscale: float = 1.0
    """Image downscale factor (2 = half size); K is scaled to match."""

    def run(self) -> int:
        from sparsesplat.datasets import load

        from .contact_sheet import contact_sheet, save_png

        scene = load(self.data, format=self.format, protocol=self.protocol, downscale=self.downscale)
        print(scene.summary())
        roles = {i: "train" for i in scene.train_ids} | {i: "test" for i in scene.test_ids}
        labels = [f"{i}: {name} ({roles.get(i, '-')})" for i, name in enumerate(scene.names)]
        sheet = contact_sheet(scene.images.numpy(), labels)
        path = self.out / "contact_sheet.png"
        save_png(sheet, path)
        print(f"contact sheet: {path}")
        return 0


@dataclass
class Info:
    """Print versions and which rasterizer backends work here (builds the CPU backend on first use)."""

    build: bool = True
    """Try to build the compiled backends (takes about a minute the first time)."""

    def run(self) -> int:
        import platform

        import torch

        from sparsesplat.rasterizer import backends

        print(f"sparsesplat {__version__}, Python {platform.python_version()}, torch {torch.__version__}")
        print(f"CUDA available: {torch.cuda.is_available()}")
        for name in backends.BACKENDS:
            ok = backends.is_available(name) if (self.build or name in ("torch", "gsplat")) else None
            state = {True: "available", False: "unavailable", None: "not checked"}[ok]
            print(f"  backend {name:7s} {state}")
        return 0


class Reconstruct(ReconstructConfig):
    """Reconstruct a 3D scene from a few photos (their cameras are estimated) or from a posed dataset (COLMAP,
    Blender, LLFF, DTU) into a run folder. The input and output options, then --primitive and --full, are all
    most runs need: sparsesplat reconstruct PHOTOS -o runs/NAME [--protocol llff3] [--primitive triangle] [--full]
    (--resume continues a run with its own settings)."""

    def run(self) -> int:
        from .pipeline import apply_schedule, reconstruct
        from .progress import TrainingProgress
        from .run_config import resumed_settings

        cfg = resumed_settings(self) if self.resume else self
        apply_schedule(cfg)  # the bar needs the step count; reconstruct() applies it again (a no-op) and says which
        with TrainingProgress(cfg.train.iters) as bar:
            metrics = reconstruct(cfg, progress=bar.update, log=bar.log, on_start=bar.start)
        if not metrics:  # a data-parallel follower (torchrun rank > 0): rank 0 reports
            return 0
        psnr = metrics.get("psnr")
        tail = f", test PSNR {psnr:.2f} dB, SSIM {metrics['ssim']:.3f}" if psnr is not None else ""
        print(f"done: {metrics['num_primitives']} {cfg.primitive} primitives in {metrics['train_seconds']:.0f} s{tail}")
        print(f"run folder: {cfg.out}")
        return 0


@dataclass
class View:
    """Open a run folder or a splat file in the web viewer (prints its address; Ctrl+C to quit)."""

    folder: tyro.conf.Positional[Path]
    """Run folder written by `sparsesplat reconstruct`, or a splat file (.ply, .splat, .spz, .compressed.ply, .sog)."""
    host: str = "127.0.0.1"
    """Interface to bind (0.0.0.0 to reach the viewer from other machines)."""
    port: int = 8080
    """Port; the next free one is taken when it is busy."""

    def run(self) -> int:
        from .view_run import serve_run

        serve_run(self.folder, self.host, self.port)
        # the server is closed; leave without waiting for web-server threads that may linger after Ctrl+C
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class Export(ExportCommand):
    """Write a run's Gaussian scene (or convert a splat file) as .ply, .splat, .spz, .compressed.ply or .sog:
    sparsesplat export runs/NAME -o scene.spz [--sh-degree 1] [--min-opacity 0.02] [--crop X Y Z X Y Z]"""


class Poses(PosesCommand):
    """Estimate camera poses (and an initial point cloud) from photos without camera files."""


Command = Union[
    Annotated[Reconstruct, tyro.conf.subcommand("reconstruct")],
    Annotated[View, tyro.conf.subcommand("view")],
    Annotated[Export, tyro.conf.subcommand("export")],
    Annotated[Poses, tyro.conf.subcommand("poses")],
    Annotated[Inspect, tyro.conf.subcommand("inspect")],
    Annotated[Info, tyro.conf.subcommand("info")],
]


def _one_line(text: str) -> str:
    """The gist of tyro's boxed error message, on one line."""
    lines = [re.sub(r"^[\s│╭╰─┬┴├┤╮╯]+|[\s│╭╰─┬┴├┤╮╯]+$", "", ln) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("For full helptext") and not set(ln) <= set("─")]
    return " ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else "invalid arguments")


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args in (["--version"], ["-V"]):
        print(f"sparsesplat {__version__}")
        return 0
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cmd = tyro.cli(Command, args=args, prog="sparsesplat", description=__doc__.splitlines()[0])
    except SystemExit as e:
        if e.code not in (0, None):
            print(f"sparsesplat: error: {_one_line(err.getvalue())} (see sparsesplat --help)", file=sys.stderr)
            raise SystemExit(2)
        sys.stderr.write(err.getvalue())
        raise
    from .options import OptionRangeError, check_ranges

    try:
        check_ranges(cmd)
    except OptionRangeError as e:
        print(f"sparsesplat: error: {e} (see sparsesplat {args[0]} --help)", file=sys.stderr)
        raise SystemExit(2)
    from sparsesplat.priors.depth import MissingDependency

    try:
        return cmd.run()
    except (ValueError, FileNotFoundError, MissingDependency) as e:
        print(f"sparsesplat: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permissions: nothing half-written was left under a final name
        print(f"sparsesplat: error: could not write {e.filename or 'an output file'}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"sparsesplat: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
