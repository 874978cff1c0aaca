"""What every primitive kind shares: the appearance fields (opacities, and SH or plain colours) with their
checks, the finite-value test, and ``sanitize``, which makes broken primitives harmless before a render.

Colours are either spherical-harmonics coefficients ``sh`` (N, (deg+1)^2, 3), turned into RGB per view as
max(0, SH(dir) + 0.5) with dir from the camera centre to the primitive's centre, or plain ``colors`` (N, 3)
used as they are. Values are activated (positive scales, opacities in [0, 1]). The kinds themselves live in
``kinds/<kind>/primitive.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Optional

import torch


def all_finite(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether every element of every tensor given is finite (None is skipped), in one summation per tensor
    and one host sync: a NaN or Inf element makes its tensor's sum NaN or Inf, and a finite sum proves every
    element finite. Only when a sum is not finite (a NaN, or an overflow of huge finite values) are the
    elements tested one by one. Much cheaper than elementwise tests on large tensors."""
    ts = [t.detach() for t in tensors if t is not None and t.numel()]
    if not ts or bool(torch.isfinite(torch.stack([t.sum().to(torch.float64) for t in ts])).all()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in ts)


def sanitize(prims, check_well_formed: bool = True):
    """``prims`` with every primitive that holds a non-finite value or fails its kind's ``well_formed()`` replaced
    by a harmless, fully transparent one: opacity 0, the fields of the kind's ``HARMLESS`` set to those values,
    every other field 0. ``torch.where`` keeps the gradients of the others exact and gives the replaced ones
    zero gradient. The common case (nothing to replace) returns ``prims`` itself, without a copy.

    check_well_formed=False: the caller's kernels cull what ``well_formed()`` rejects themselves, with zero
    gradients (the compiled CPU Gaussians: a zero quaternion, a negative scale, a GES shape <= 0), so only
    finite values are tested (one sum per tensor; the per-primitive ``well_formed()`` test cost as much again).
    Where a value is not finite, the primitives are replaced as above, ill-formed ones included."""
    values = {f.name: getattr(prims, f.name) for f in fields(prims) if torch.is_tensor(getattr(prims, f.name))}
    finite = all_finite(*values.values())
    if finite and not check_well_formed:
        return prims
    ok = prims.well_formed()
    if finite and bool(ok.all()):
        return prims
    for t in values.values():
        ok = ok & torch.isfinite(t).reshape(len(t), -1).all(-1)
    if bool(ok.all()):
        return prims
    out = {}
    for name, t in values.items():
        fill = 0.0 if name == "opacities" else prims.HARMLESS.get(name, 0.0)
        fill = torch.as_tensor(fill, dtype=t.dtype, device=t.device).expand_as(t)
        out[name] = torch.where(ok.reshape((-1,) + (1,) * (t.ndim - 1)), t, fill)
    return type(prims)(**out)


@dataclass
class Appearance:
    opacities: torch.Tensor
    sh: Optional[torch.Tensor] = None
    colors: Optional[torch.Tensor] = None

    HARMLESS: ClassVar[dict] = {}
    """Values of a primitive that ``sanitize`` puts in place of a broken one (others: 0, opacity 0)."""

    def well_formed(self) -> torch.Tensor:
        """(N,) bool: which primitives have a shape the rasterizer can draw (besides finite values)."""
        return torch.ones(len(self), dtype=torch.bool, device=self.opacities.device)

    def _check_appearance(self, n: int, name: str) -> None:
        if (self.sh is None) == (self.colors is None):
            raise ValueError(f"{name}: give exactly one of sh (N,K,3) or colors (N,3)")
        if self.opacities.shape != (n,):
            raise ValueError(f"{name}: opacities must be ({n},), got {tuple(self.opacities.shape)}")
        if self.sh is not None:
            k = self.sh.shape[1] if self.sh.ndim == 3 else -1
            if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or k not in (1, 4, 9, 16):
                raise ValueError(
                    f"{name}: sh must be ({n}, K, 3) with K in 1, 4, 9, 16; got {tuple(self.sh.shape)}"
                )
        if self.colors is not None and self.colors.shape != (n, 3):
            raise ValueError(f"{name}: colors must be ({n}, 3), got {tuple(self.colors.shape)}")

    @property
    def max_sh_degree(self) -> Optional[int]:
        if self.sh is None:
            return None
        return int(round(self.sh.shape[1] ** 0.5)) - 1
