"""`sparsesplat export`: a run's Gaussian scene (or any splat file) in the formats people share.

    sparsesplat export runs/fern -o fern.spz --sh-degree 2 --min-opacity 0.02
    sparsesplat reconstruct photos/ -o runs/x --export spz compressed.ply      # same, at the end of a run

The format comes from the output's suffix (``rasterizer.splat_formats``). Only Gaussian scenes have these
formats; triangle runs keep their mesh exports and convex runs their PLY.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional, Sequence

import tyro

from sparsesplat.rasterizer.kinds.gaussian.ply import gaussian_property_names
from sparsesplat.rasterizer.splat_formats import FORMATS, SplatFormatError, format_of, read_splats, write_splats
from sparsesplat.rasterizer.splat_formats.edit import SplatEdit, edit_splats

from .run_config import run_primitive

GAUSSIAN_ONLY = ("triangle", "convex")


def refuse_kind(kind: str, target: str) -> None:
    if kind == "ges" and not target.lower().endswith(".ply"):
        raise SplatFormatError(f"{target}: a GES scene's shapes (beta) have no place in the Gaussian splat formats "
                               f"({', '.join(FORMATS)}); use its scene.ply, or export to a .ply file")
    if kind in GAUSSIAN_ONLY:
        keep = "its mesh exports (mesh.ply, mesh.obj)" if kind == "triangle" else "its scene.ply"
        raise SplatFormatError(f"{target}: a {kind} scene cannot be written as a Gaussian splat format "
                               f"({', '.join(FORMATS)} hold 3D Gaussians only); use {keep}")


def normalize_suffix(name: str) -> str:
    """'spz', '.spz' or 'compressed.ply' -> the registered suffix; unknown names raise one clear line."""
    suffix = "." + name.strip().lower().lstrip(".")
    if suffix not in FORMATS:
        raise SplatFormatError(f"--export {name}: unknown format; choose from "
                               f"{', '.join(s.lstrip('.') for s in FORMATS)}")
    return suffix


def ply_bytes(n: int, sh_coeffs: int) -> int:
    """Size of the standard 3DGS PLY of ``n`` splats with ``sh_coeffs`` SH coefficients per channel."""
    names = gaussian_property_names(sh_coeffs)
    header = ("ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
              + "".join(f"property float {p}\n" for p in names) + "end_header\n")
    return len(header) + 4 * len(names) * n


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


def export_file(source: Path, out: Path, edit: SplatEdit = SplatEdit(), log: Callable[[str], None] = print) -> dict:
    """Read ``source`` (a run folder's scene or a splat file), apply ``edit``, write ``out``; returns a summary."""
    fmt = format_of(out)
    if source.is_dir():
        refuse_kind(run_primitive(source), str(out))
        scene = source / "scene.ply"
        if not scene.is_file():
            raise SplatFormatError(f"{source} has no scene.ply; is it a finished run folder?")
    else:
        scene = source
    raw = read_splats(scene)
    n_in = raw.means.shape[0]
    raw, dropped = edit_splats(raw, edit)
    write_splats(out, raw)
    n = raw.means.shape[0]
    size = out.stat().st_size
    ply = ply_bytes(n, raw.sh.shape[1])
    gone = ", ".join(f"{v:,} by {k}" for k, v in dropped.items() if v)
    sh = "no SH" if not fmt.keeps_sh else f"SH degree {int(raw.sh.shape[1] ** 0.5) - 1}"
    from sparsesplat.rasterizer.splat_formats.checks import out_of_range

    for note in out_of_range(raw, fmt.suffix):
        log(f"note: {out.name}: {note}")
    log(f"wrote {out} ({fmt.describe}): {n:,} splats" + (f" of {n_in:,} (dropped {gone})" if gone else "")
        + f", {sh}, {_mb(size)}, {size / ply:.1%} of the standard PLY ({_mb(ply)})")
    return {"path": str(out), "format": fmt.suffix, "splats": n, "bytes": size, "ply_bytes": ply,
            "dropped": dropped}


def export_suffixes(names: Sequence[str]) -> list[str]:
    """--export's values ('spz', 'sog' or 'spz,sog') as registered suffixes, in order, without repeats."""
    out: list[str] = []
    for name in (part for item in names for part in item.split(",") if part.strip()):
        suffix = normalize_suffix(name)
        if suffix not in out:
            out.append(suffix)
    return out


def export_run_formats(run: Path, names: Sequence[str], log: Callable[[str], None] = print) -> list[dict]:
    """Write ``run/scene<suffix>`` for each format (reconstruct --export), from the run's scene.ply."""
    return [export_file(run, run / f"scene{s}", log=log) for s in export_suffixes(names) if s != ".ply"]


@dataclass
class ExportCommand:
    """Write a run's Gaussian scene (or convert a splat file) as .ply, .splat, .spz, .compressed.ply or .sog,
    the format chosen by the output's suffix."""

    source: tyro.conf.Positional[Path]
    """Run folder written by `sparsesplat reconstruct`, or a splat file (.ply, .splat, .spz, .compressed.ply, .sog)."""
    out: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """Output file; its suffix picks the format."""
    sh_degree: Annotated[Optional[int], tyro.conf.arg(metavar="{0,1,2,3}")] = None
    """Keep SH bands up to this degree (0-3; default: all the scene has; .splat keeps none)."""
    min_opacity: float = 0.0
    """Drop splats fainter than this opacity (0-1), e.g. 0.02 to shed near-invisible ones."""
    max_size: Annotated[Optional[float], tyro.conf.arg(metavar="SIZE")] = None
    """Drop splats whose largest standard deviation exceeds this (world units of the scene file)."""
    crop: Annotated[Optional[tuple[float, float, float, float, float, float]],
                    tyro.conf.arg(metavar="X Y Z X Y Z")] = None
    """Keep splats inside the box MIN_X MIN_Y MIN_Z MAX_X MAX_Y MAX_Z (world units of the scene file)."""
    drop_invalid: bool = False
    """Drop splats holding NaN or infinite values instead of refusing the scene."""
    overwrite: bool = False
    """Replace the output file if it exists."""

    def run(self) -> int:
        if not self.source.exists():
            raise FileNotFoundError(f"{self.source}: no such run folder or splat file")
        format_of(self.out)  # an unknown suffix is refused before anything is read
        if self.out.exists() and not self.overwrite:
            raise SplatFormatError(f"{self.out} exists; pass --overwrite to replace it")
        if self.out.resolve() == self.source.resolve():
            raise SplatFormatError(f"{self.out}: the output would replace its own source; choose another name")
        edit = SplatEdit(sh_degree=self.sh_degree, min_opacity=self.min_opacity, max_size=self.max_size,
                         crop=self.crop, drop_invalid=self.drop_invalid)
        export_file(self.source, self.out, edit)
        return 0
