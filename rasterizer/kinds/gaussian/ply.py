"""Gaussian and GES scenes as PLY files, in the layout of the original 3DGS code.

A Gaussian PLY holds one binary little-endian ``vertex`` element of float32 properties, in this order::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3*(K-1)-1)  opacity  scale_0..2  rot_0..3

with values stored *raw*, as 3DGS trains them: ``opacity`` is a logit, ``scale_*`` are log-scales, ``rot_*``
a wxyz quaternion (any norm), ``f_dc_*`` the degree-0 SH coefficients and ``f_rest_*`` the higher-degree
coefficients channel-major (all of R, then G, then B). Normals are written as zeros. Files in this layout
open in other 3DGS tools (SuperSplat, gsplat's and the SIBR viewers); files those tools write load here,
whatever their SH degree, and extra properties are ignored.

GES scenes (``GeneralizedGaussians``) are the same layout with one more property, ``beta``: each splat's shape
as it renders (beta > 0, 2 for a Gaussian). Other 3DGS tools ignore it and draw the splats as Gaussians.

The binary writer and point clouds shared by every kind are ``rasterizer/ply.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ...ply import PlyFormatError, checked_array, float_records, write_binary_ply
from ...sh import rgb_to_sh0
from .primitive import Gaussians, GeneralizedGaussians

SHAPE_PROPERTY = "beta"  # GES: each splat's shape
OPACITY_EPS = 1e-6  # opacities are clipped to [eps, 1 - eps] before the logit so it stays finite
MIN_SCALE = 1e-12  # scales are clamped to this before the log


@dataclass
class RawGaussians:
    """Gaussians as stored (and trained): means (N,3), quats (N,4) wxyz, log_scales (N,3),
    opacity_logits (N,), sh (N,K,3), and for GES scenes shapes (N,) (beta, as it renders; None otherwise).
    float32 tensors on the CPU."""

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor
    shapes: Optional[torch.Tensor] = None

    def activated(self) -> Gaussians:
        """The ``Gaussians`` render() takes (``GeneralizedGaussians`` when the file held shapes):
        exp(log_scales), sigmoid(opacity_logits)."""
        kw = dict(means=self.means, quats=self.quats, scales=torch.exp(self.log_scales),
                  opacities=torch.sigmoid(self.opacity_logits), sh=self.sh)
        return Gaussians(**kw) if self.shapes is None else GeneralizedGaussians(shapes=self.shapes, **kw)


def gaussian_property_names(num_sh: int) -> list[str]:
    """Vertex property names, in file order, for ``num_sh`` = K SH coefficients per channel."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (num_sh - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


# ----------------------------------------------------------------------------------------------- writing


def save_gaussians_ply_raw(path, means, quats, log_scales, opacity_logits, sh, shapes=None) -> None:
    """Write raw (trainer) parameters as a 3DGS PLY, atomically.

    Args:
        path: output file (folders are created).
        means (N,3), quats (N,4) wxyz (any norm), log_scales (N,3), opacity_logits (N,) or (N,1),
        sh (N,K,3) with K in 1, 4, 9, 16 (K=1: degree 0, no f_rest properties);
        shapes (N,): GES's betas, written as the extra property ``beta`` (None: a Gaussian scene).
    """
    n = means.shape[0]
    if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3 or sh.shape[1] not in (1, 4, 9, 16):
        raise ValueError(f"sh must be ({n}, K, 3) with K in 1, 4, 9, 16; got {tuple(sh.shape)}")
    k = sh.shape[1]
    sh_np = checked_array(sh.reshape(n, k * 3), k * 3, "sh", n).reshape(n, k, 3)
    columns = [
        checked_array(means, 3, "means", n),
        np.zeros((n, 3)),
        sh_np[:, 0, :],
        sh_np[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),  # channel-major, as 3DGS writes f_rest
        checked_array(opacity_logits.reshape(n), None, "opacity_logits", n)[:, None],
        checked_array(log_scales, 3, "log_scales", n),
        checked_array(quats, 4, "quats", n),
    ]
    names = gaussian_property_names(k)
    if shapes is not None:
        columns.append(checked_array(shapes, None, "shapes", n)[:, None])
        names.append(SHAPE_PROPERTY)
    write_binary_ply(Path(path), float_records(np.concatenate(columns, axis=1), names))


def save_gaussians_ply(path, gaussians: Gaussians) -> None:
    """Write activated Gaussians (render()'s convention) as a 3DGS PLY, atomically.

    Scales are clamped to >= 1e-12 before the log and opacities clipped to [1e-6, 1 - 1e-6] before the
    logit so every stored value is finite. Gaussians given plain ``colors`` are stored as degree-0 SH.
    ``GeneralizedGaussians`` (GES) keep their shapes (property ``beta``).
    """
    g = gaussians
    sh = g.sh if g.sh is not None else rgb_to_sh0(g.colors.detach().double())[:, None, :]
    scales = g.scales.detach().double().clamp_min(MIN_SCALE)
    opac = g.opacities.detach().double().clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)
    shapes = g.shapes if isinstance(g, GeneralizedGaussians) else None
    save_gaussians_ply_raw(path, g.means, g.quats, torch.log(scales), torch.logit(opac), sh, shapes=shapes)


# ----------------------------------------------------------------------------------------------- reading


def _vertex_element(path: Path):
    from plyfile import PlyData  # imported here: only readers need it

    if not path.is_file():
        raise FileNotFoundError(f"no PLY file at {path}")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for malformed headers and short data
        raise PlyFormatError(f"{path} is not a readable PLY file ({type(e).__name__}: {e})") from None
    names = [el.name for el in ply.elements]
    if "vertex" not in names:
        raise PlyFormatError(f"{path} has no 'vertex' element (elements: {', '.join(names) or 'none'}); "
                             f"a Gaussian PLY stores one Gaussian per vertex")
    return ply["vertex"]


def _rest_count(path: Path, props: set[str]) -> int:
    """Number of f_rest_* properties, checked to be 0..n-1 with n = 3*(K-1) for K in 1, 4, 9, 16."""
    idx = sorted(int(p[len("f_rest_"):]) for p in props if p.startswith("f_rest_") and p[7:].isdigit())
    if idx != list(range(len(idx))) or len(idx) not in (0, 9, 24, 45):
        raise PlyFormatError(
            f"{path}: {len(idx)} f_rest_* properties; a 3DGS PLY has f_rest_0..f_rest_(n-1) with n = 0, 9, 24 "
            f"or 45 (SH degree 0 to 3)"
        )
    return len(idx)


def load_gaussians_ply_raw(path) -> RawGaussians:
    """Read a 3DGS PLY (any SH degree, binary or ASCII, float or double) as raw parameters."""
    path = Path(path)
    vertex = _vertex_element(path)
    props = {p.name for p in vertex.properties}
    n_rest = _rest_count(path, props)
    k = 1 + n_rest // 3
    required = [name for name in gaussian_property_names(k) if name not in ("nx", "ny", "nz")]
    missing = [name for name in required if name not in props]
    if missing:
        hint = " (it looks like a point cloud: use a Gaussian scene.ply)" if {"x", "red"} <= props else ""
        raise PlyFormatError(
            f"{path} is not a 3DGS Gaussian PLY: its vertex element lacks {', '.join(missing)}{hint}"
        )
    n = vertex.count

    def cols(names: list[str]) -> torch.Tensor:
        a = np.empty((n, len(names)), dtype=np.float32)
        for i, name in enumerate(names):
            a[:, i] = vertex[name]
        return torch.from_numpy(a)

    dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :]
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k - 1).transpose(1, 2)
    return RawGaussians(
        means=cols(["x", "y", "z"]),
        quats=cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=cols(["scale_0", "scale_1", "scale_2"]),
        opacity_logits=cols(["opacity"])[:, 0],
        sh=torch.cat([dc, rest], dim=1).contiguous(),
        shapes=cols([SHAPE_PROPERTY])[:, 0] if SHAPE_PROPERTY in props else None,
    )


def load_gaussians_ply(path) -> Gaussians:
    """Read a 3DGS PLY as activated ``Gaussians`` (scales = exp, opacities = sigmoid; quats as stored);
    ``GeneralizedGaussians`` when it holds GES shapes."""
    return load_gaussians_ply_raw(path).activated()
