"""What every writer checks before it writes a byte: a scene it can store, in a folder that exists."""

from __future__ import annotations

from pathlib import Path

import torch

from ..kinds.gaussian.ply import RawGaussians
from ..sh import C0
from .errors import SplatFormatError


def nonfinite_splats(raw: RawGaussians) -> torch.Tensor:
    """(N,) bool: the splats holding a NaN or infinite value in any parameter."""
    n = raw.means.shape[0]
    bad = torch.zeros(n, dtype=torch.bool)
    for t in (raw.means, raw.quats, raw.log_scales, raw.opacity_logits[:, None], raw.sh.reshape(n, -1)):
        bad |= ~torch.isfinite(t).all(dim=1)
    return bad


def check_scene(raw: RawGaussians, where: str) -> None:
    """Shapes agree, the scene is not empty and every value is finite; else one clear line naming ``where``."""
    n = raw.means.shape[0]
    if n == 0:
        raise SplatFormatError(f"{where}: the scene is empty (0 splats); nothing to write")
    shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,)}
    for name, want in shapes.items():
        got = tuple(getattr(raw, name).shape)
        if got != want:
            raise SplatFormatError(f"{where}: {name} has shape {got}, expected {want}")
    if raw.sh.ndim != 3 or raw.sh.shape[0] != n or raw.sh.shape[2] != 3 or raw.sh.shape[1] not in (1, 4, 9, 16):
        raise SplatFormatError(f"{where}: sh has shape {tuple(raw.sh.shape)}, expected ({n}, K, 3), K in 1, 4, 9, 16")
    bad = nonfinite_splats(raw)
    if bad.any():
        raise SplatFormatError(f"{where}: {int(bad.sum())} of {n} splats hold NaN or infinite values "
                               f"(e.g. splat {int(bad.nonzero()[0])}); drop them first (sparsesplat export "
                               "--drop-invalid)")
    zero_quat = raw.quats.norm(dim=1) == 0
    if zero_quat.any():
        raise SplatFormatError(f"{where}: {int(zero_quat.sum())} splats have a zero rotation quaternion")


def check_writable(path: Path, raw: RawGaussians) -> None:
    if not path.parent.is_dir():
        raise SplatFormatError(f"{path}: the folder {path.parent} does not exist; create it or choose another path")
    check_scene(raw, str(path))


# Values a format cannot hold: (what, the values per splat, low, high). Such values are clamped when written.
_DC_RGB = (lambda r: 0.5 + C0 * r.sh[:, 0, :])
LIMITS = {
    ".spz": [("colour (SH DC)", lambda r: r.sh[:, 0, :], -0.5 / 0.15, 0.5 / 0.15),
             ("log-scale", lambda r: r.log_scales, -10.0, 15.0 / 16 + 5),
             ("higher SH", lambda r: r.sh[:, 1:, :].reshape(len(r.means), -1), -1.0, 127 / 128)],
    ".splat": [("colour", _DC_RGB, 0.0, 1.0)],
    ".compressed.ply": [("log-scale", lambda r: r.log_scales, -20.0, 20.0),
                        ("higher SH", lambda r: r.sh[:, 1:, :].reshape(len(r.means), -1), -4.0, 4.0)],
}


def out_of_range(raw: RawGaussians, suffix: str) -> list[str]:
    """One phrase per kind of value outside what format ``suffix`` can hold (clamped on writing)."""
    notes = []
    n = raw.means.shape[0]
    for what, values, lo, hi in LIMITS.get(suffix, []):
        v = values(raw)
        if v.numel() == 0:
            continue
        bad = int(((v < lo - 1e-6) | (v > hi + 1e-6)).reshape(n, -1).any(dim=1).sum())
        if bad:
            notes.append(f"{bad:,} splats ({bad / n:.1%}) have a {what} outside the format's range "
                         f"[{lo:.3g}, {hi:.3g}] and are clamped")
    return notes
