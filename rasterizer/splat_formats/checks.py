"""What every writer checks before it writes a byte: a scene it can store, in a folder that exists."""

from __future__ import annotations

from pathlib import Path

import torch

from ..ply import RawGaussians
from .errors import SplatFormatError


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
    bad = torch.zeros(n, dtype=torch.bool)
    for t in (raw.means, raw.quats, raw.log_scales, raw.opacity_logits[:, None], raw.sh.reshape(n, -1)):
        bad |= ~torch.isfinite(t).all(dim=1)
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
