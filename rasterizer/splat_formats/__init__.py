"""Gaussian scenes in the formats people share: the standard PLY, ``.splat``, ``.spz``, PlayCanvas's
``.compressed.ply`` and ``.sog``. The format comes from the file name's suffix.

    from sparsesplat.rasterizer.splat_formats import read_splats, write_splats
    raw = read_splats("scene.spz")              # RawGaussians: means, quats, log_scales, opacity_logits, sh
    write_splats("scene.compressed.ply", raw)

Every format holds what a 3DGS PLY holds, quantized (see each module for its layout and error bounds):

| suffix | layout | SH kept |
|---|---|---|
| .ply | 3DGS float32 per property (``rasterizer.ply``) | all |
| .splat | 32 bytes a splat (antimatter15): float position and scale, 8-bit colour, alpha and rotation | none |
| .spz | Niantic's gzip'd columns: 24-bit fixed-point positions, 8-bit log-scales, colours, alphas, SH | all |
| .compressed.ply | PlayCanvas: chunks of 256 splats, 11/10/11-bit packed position and scale per chunk range | all (8 bit) |
| .sog | PlayCanvas SOG: a zip of meta.json and lossless WebP images, codebooks for scale, colour and SH | all |

Values are stored in the 3DGS PLY convention (OpenCV-style world as trained); formats whose convention
differs (SPZ) are converted on read and write. Files are written atomically (temp file, then rename); a file
that cannot be read raises ``SplatFormatError`` naming the file and what is wrong with it.

Part of the rasterizer (the ground floor): imports nothing else from sparsesplat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..kinds.gaussian.ply import RawGaussians
from .errors import SplatFormatError


@dataclass(frozen=True)
class SplatFormat:
    suffix: str
    describe: str
    read: Callable[[Path], RawGaussians]
    write: Callable[[Path, RawGaussians], None]
    keeps_sh: bool


def _ply_read(path: Path) -> RawGaussians:
    from ..kinds.gaussian.ply import PlyFormatError, load_gaussians_ply_raw

    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if b"packed_position" in head.split(b"end_header", 1)[0]:  # a compressed PLY saved under a plain .ply name
        from .compressed_ply import read_compressed_ply

        return read_compressed_ply(path)

    try:
        return load_gaussians_ply_raw(path)
    except PlyFormatError as e:
        raise SplatFormatError(str(e)) from None


def _ply_write(path: Path, raw: RawGaussians) -> None:
    from ..kinds.gaussian.ply import save_gaussians_ply_raw

    save_gaussians_ply_raw(path, raw.means, raw.quats, raw.log_scales, raw.opacity_logits, raw.sh, raw.shapes)


def _lazy(module: str, name: str) -> Callable:
    def call(*args):
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), name)(*args)

    return call


FORMATS: dict[str, SplatFormat] = {
    f.suffix: f
    for f in (
        SplatFormat(".ply", "standard 3DGS PLY", _ply_read, _ply_write, True),
        SplatFormat(".compressed.ply", "PlayCanvas compressed PLY", _lazy("compressed_ply", "read_compressed_ply"),
                    _lazy("compressed_ply", "write_compressed_ply"), True),
        SplatFormat(".splat", "antimatter15 .splat (no SH)", _lazy("splat", "read_splat"),
                    _lazy("splat", "write_splat"), False),
        SplatFormat(".spz", "Niantic SPZ", _lazy("spz", "read_spz"), _lazy("spz", "write_spz"), True),
        SplatFormat(".sog", "PlayCanvas SOG", _lazy("sog", "read_sog"), _lazy("sog", "write_sog"), True),
    )
}


def format_of(path) -> SplatFormat:
    """The format a file name asks for (the longest known suffix wins: ``x.compressed.ply`` is not ``.ply``)."""
    name = Path(path).name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return FORMATS[suffix]
    raise SplatFormatError(f"{path}: unknown splat format; the file name must end in one of "
                           f"{', '.join(sorted(FORMATS, key=len))}")


def read_splats(path) -> RawGaussians:
    """Read a Gaussian scene file of any supported format (by its suffix) as raw parameters."""
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise SplatFormatError(f"{path}: no such file")
    return fmt.read(path)


def write_splats(path, raw: RawGaussians) -> None:
    """Write ``raw`` in the format its suffix names, atomically. Refuses NaN/inf values and empty scenes."""
    from .checks import check_writable

    path = Path(path)
    fmt = format_of(path)
    if raw.shapes is not None and fmt.write is not _ply_write:
        raise SplatFormatError(f"{path}: a GES scene's shapes (beta) have no place in this format, which holds 3D "
                               "Gaussians only; write it as .ply")
    check_writable(path, raw)
    fmt.write(path, raw)


__all__ = ["FORMATS", "SplatFormat", "SplatFormatError", "format_of", "read_splats", "write_splats"]
