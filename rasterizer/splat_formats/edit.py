"""Edits a user asks for when sharing a scene: fewer SH bands, no faint or huge splats, a crop, no invalid ones.

    raw, kept = edit_splats(raw, SplatEdit(sh_degree=1, min_opacity=0.02, crop=(-1, -1, -1, 1, 1, 1)))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..kinds.gaussian.ply import RawGaussians
from .checks import nonfinite_splats
from .errors import SplatFormatError


@dataclass(frozen=True)
class SplatEdit:
    sh_degree: Optional[int] = None
    """Keep SH bands up to this degree (0 keeps only the base colour); None keeps them all."""
    min_opacity: float = 0.0
    """Drop splats whose opacity (0..1) is below this."""
    max_size: Optional[float] = None
    """Drop splats whose largest standard deviation (world units) exceeds this."""
    crop: Optional[Sequence[float]] = None
    """Keep splats whose centre lies in the box (min x, min y, min z, max x, max y, max z)."""
    drop_invalid: bool = False
    """Drop splats holding NaN or infinite values (else writing refuses them)."""


def _select(raw: RawGaussians, keep: torch.Tensor) -> RawGaussians:
    return RawGaussians(means=raw.means[keep], quats=raw.quats[keep], log_scales=raw.log_scales[keep],
                        opacity_logits=raw.opacity_logits[keep], sh=raw.sh[keep],
                        shapes=None if raw.shapes is None else raw.shapes[keep])


def edit_splats(raw: RawGaussians, edit: SplatEdit) -> tuple[RawGaussians, dict[str, int]]:
    """The edited scene and how many splats each rule dropped (rules apply in the order of SplatEdit's fields)."""
    n = raw.means.shape[0]
    dropped: dict[str, int] = {}
    keep = torch.ones(n, dtype=torch.bool)

    def rule(name: str, ok: torch.Tensor) -> None:
        nonlocal keep
        dropped[name] = int((keep & ~ok).sum())
        keep = keep & ok

    if edit.drop_invalid:
        rule("invalid", ~nonfinite_splats(raw) & (raw.quats.norm(dim=1) > 0))
    if edit.min_opacity > 0:
        rule("opacity", torch.sigmoid(raw.opacity_logits) >= edit.min_opacity)
    if edit.max_size is not None:
        rule("size", torch.exp(raw.log_scales.max(dim=1).values) <= edit.max_size)
    if edit.crop is not None:
        box = torch.as_tensor(list(edit.crop), dtype=raw.means.dtype)
        if box.numel() != 6 or not bool((box[:3] <= box[3:]).all()):
            raise SplatFormatError(f"crop box {list(edit.crop)} must be six numbers min x,y,z then max x,y,z "
                                   "with each min <= its max")
        rule("crop", ((raw.means >= box[:3]) & (raw.means <= box[3:])).all(dim=1))
    out = _select(raw, keep) if not bool(keep.all()) else raw
    if edit.sh_degree is not None:
        if not 0 <= edit.sh_degree <= 3:
            raise SplatFormatError(f"SH degree {edit.sh_degree} must be 0, 1, 2 or 3")
        k = (edit.sh_degree + 1) ** 2
        if k < out.sh.shape[1]:
            out = RawGaussians(means=out.means, quats=out.quats, log_scales=out.log_scales,
                               opacity_logits=out.opacity_logits, sh=out.sh[:, :k].contiguous(), shapes=out.shapes)
    return out, dropped
