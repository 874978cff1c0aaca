"""Primitive types rendered by ``render()``. Values are activated (positive scales, opacities in [0, 1]).

Colours are either spherical-harmonics coefficients ``sh`` (N, (deg+1)^2, 3), turned into RGB per view as
max(0, SH(dir) + 0.5) with dir from the camera centre to the primitive's centre, or plain ``colors`` (N, 3)
used as they are.
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


def sanitize(prims):
    """``prims`` with every primitive that holds a non-finite value or fails its kind's ``well_formed()`` replaced
    by a harmless, fully transparent one: opacity 0, the fields of the kind's ``HARMLESS`` set to those values,
    every other field 0. ``torch.where`` keeps the gradients of the others exact and gives the replaced ones
    zero gradient. The common case (nothing to replace) returns ``prims`` itself, without a copy."""
    values = {f.name: getattr(prims, f.name) for f in fields(prims) if torch.is_tensor(getattr(prims, f.name))}
    ok = prims.well_formed()
    if all_finite(*values.values()) and bool(ok.all()):
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
class _Appearance:
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


@dataclass
class Gaussians(_Appearance):
    """N 3D Gaussians: means (N,3), quats (N,4) wxyz (any norm), scales (N,3) > 0, opacities (N,)."""

    means: torch.Tensor = None
    quats: torch.Tensor = None
    scales: torch.Tensor = None

    def __init__(self, means, quats, scales, opacities, sh=None, colors=None):
        self.means, self.quats, self.scales = means, quats, scales
        self.opacities, self.sh, self.colors = opacities, sh, colors
        n = means.shape[0]
        if means.shape != (n, 3) or quats.shape != (n, 4) or scales.shape != (n, 3):
            raise ValueError(
                "Gaussians: means (N,3), quats (N,4), scales (N,3) expected; got "
                f"{tuple(means.shape)}, {tuple(quats.shape)}, {tuple(scales.shape)}"
            )
        self._check_appearance(n, "Gaussians")

    HARMLESS: ClassVar[dict] = {"quats": (1.0, 0.0, 0.0, 0.0), "scales": 1.0}

    def well_formed(self) -> torch.Tensor:
        return (self.quats.norm(dim=-1) > 0) & (self.scales >= 0).all(-1)

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def centers(self) -> torch.Tensor:
        return self.means


@dataclass
class GeneralizedGaussians(Gaussians):
    """N generalized exponential splats (GES, Hamdi et al., CVPR 2024): Gaussians whose falloff
    exp(-0.5 q) (q = d^T Sigma^-1 d, in screen space after the EWA projection) becomes exp(-0.5 q^(beta/2)),
    with a shape ``shapes`` (N,) = beta > 0 each. beta = 2 is the Gaussian; a larger beta gives a flatter
    top and a sharper edge, a smaller one a sharper peak and heavier tails. Rendered exactly for beta >= 1;
    below, the footprint is cut at 11.1 standard deviations (the kernels' tile bounds).

    A subclass for what it shares (validation, ``centers``), but a kind of its own: ``render()`` and every
    writer tell them apart by type, and a Gaussian-only consumer must check ``type(g) is Gaussians``."""

    shapes: torch.Tensor = None

    def __init__(self, means, quats, scales, opacities, shapes, sh=None, colors=None):
        super().__init__(means, quats, scales, opacities, sh=sh, colors=colors)
        n = means.shape[0]
        if shapes is None or shapes.shape != (n,):
            got = None if shapes is None else tuple(shapes.shape)
            raise ValueError(f"GeneralizedGaussians: shapes must be ({n},), got {got}")
        self.shapes = shapes

    HARMLESS: ClassVar[dict] = {**Gaussians.HARMLESS, "shapes": 2.0}

    def well_formed(self) -> torch.Tensor:
        return super().well_formed() & (self.shapes > 0)


@dataclass
class Triangles(_Appearance):
    """N triangles (Triangle Splatting): vertices (N,3,3) world positions, sigma (N,) >= 0 window
    sharpness (0 = solid triangle, larger = peaked at the incentre), opacities (N,)."""

    vertices: torch.Tensor = None
    sigma: torch.Tensor = None

    def __init__(self, vertices, sigma, opacities, sh=None, colors=None):
        self.vertices, self.sigma = vertices, sigma
        self.opacities, self.sh, self.colors = opacities, sh, colors
        n = vertices.shape[0]
        if vertices.shape != (n, 3, 3) or sigma.shape != (n,):
            raise ValueError(
                f"Triangles: vertices (N,3,3) and sigma (N,) expected; got {tuple(vertices.shape)}, {tuple(sigma.shape)}"
            )
        self._check_appearance(n, "Triangles")

    HARMLESS: ClassVar[dict] = {"sigma": 1.0}

    def well_formed(self) -> torch.Tensor:
        return self.sigma >= 0

    def __len__(self) -> int:
        return self.vertices.shape[0]

    @property
    def centers(self) -> torch.Tensor:
        """Centroids (N,3): where colours are evaluated and depth is measured."""
        return self.vertices.mean(dim=1)

    @property
    def normals(self) -> torch.Tensor:
        """Unit normals (N,3), (v1 - v0) x (v2 - v0) normalized (zero for degenerate triangles)."""
        v = self.vertices
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-30)


@dataclass
class Convexes(_Appearance):
    """N smooth 3D convexes (3D Convex Splatting): points (N,P,3) with 3 <= P <= 8 (6 by default in the
    paper), smoothness delta (N,) > 0, sharpness sigma (N,) > 0, opacities (N,). The shape seen by a camera
    is the 2D convex hull of the projected points, softened by delta (edges) and sigma (falloff)."""

    points: torch.Tensor = None
    delta: torch.Tensor = None
    sigma: torch.Tensor = None

    def __init__(self, points, delta, sigma, opacities, sh=None, colors=None):
        self.points, self.delta, self.sigma = points, delta, sigma
        self.opacities, self.sh, self.colors = opacities, sh, colors
        if points.ndim != 3 or points.shape[2] != 3 or not 3 <= points.shape[1] <= 8:
            raise ValueError(f"Convexes: points must be (N, P, 3) with 3 <= P <= 8; got {tuple(points.shape)}")
        n = points.shape[0]
        if delta.shape != (n,) or sigma.shape != (n,):
            raise ValueError(
                f"Convexes: delta and sigma must be ({n},); got {tuple(delta.shape)}, {tuple(sigma.shape)}"
            )
        self._check_appearance(n, "Convexes")

    HARMLESS: ClassVar[dict] = {"delta": 1.0, "sigma": 1.0}

    def well_formed(self) -> torch.Tensor:
        return (self.delta > 0) & (self.sigma > 0)

    def __len__(self) -> int:
        return self.points.shape[0]

    @property
    def centers(self) -> torch.Tensor:
        return self.points.mean(dim=1)
