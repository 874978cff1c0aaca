"""Real spherical harmonics up to degree 3 (the 3DGS basis and sign convention), evaluated in PyTorch.

Shared by every backend: colours are computed per view from SH before rasterization, so gradients reach
the SH coefficients, the primitive centres and the camera centres through autograd.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Basis values (..., (degree+1)^2) for unit directions ``dirs`` (..., 3)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            C2[0] * xy,
            C2[1] * yz,
            C2[2] * (2.0 * zz - xx - yy),
            C2[3] * xz,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """RGB = max(0, SH(dir) + 0.5).

    sh: (N, K, 3) coefficients with K >= (degree+1)^2; dirs: (C, N, 3) from camera centre to primitive
    (need not be unit length). Returns (C, N, 3).
    """
    k = (degree + 1) ** 2
    if sh.shape[1] < k:
        raise ValueError(f"sh_degree {degree} needs {k} coefficients, the primitives have {sh.shape[1]}")
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(dirs, degree)  # (C, N, k)
    rgb = (basis[..., None] * sh[None, :, :k, :]).sum(-2)
    return torch.clamp_min(rgb + 0.5, 0.0)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Degree-0 coefficient that renders as ``rgb`` (inverse of sh_to_rgb for degree 0)."""
    return (rgb - 0.5) / C0
