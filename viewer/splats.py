"""Client-side splats: Gaussians sent to the browser for smooth orbiting (optional; other primitive kinds
are only rendered on the server). Converts activated Gaussians to viser's centres/covariances/colours."""

from __future__ import annotations

from typing import Optional

import torch

from sparsesplat.rasterizer.quaternions import quat_to_rotmat

SH_C0 = 0.28209479177387814  # the degree-0 SH basis constant, 1 / (2 sqrt(pi))


def is_gaussian_like(prims) -> bool:
    return all(isinstance(getattr(prims, k, None), torch.Tensor) for k in ("means", "quats", "scales", "opacities"))


@torch.no_grad()
def splat_arrays(prims, max_count: Optional[int] = None) -> Optional[dict]:
    """centers (N,3), covariances (N,3,3) = R diag(s^2) R^T, rgbs (N,3) (view-independent: the SH DC term),
    opacities (N,1), as float32 numpy; None for primitives that are not Gaussians. With ``max_count`` only
    the most opaque Gaussians are kept."""
    if not is_gaussian_like(prims):
        return None
    means, quats, scales = prims.means.float(), prims.quats.float(), prims.scales.float()
    opac = prims.opacities.float()
    if getattr(prims, "sh", None) is not None:
        rgb = (prims.sh[:, 0, :].float() * SH_C0 + 0.5).clamp(0, 1)
    else:
        rgb = prims.colors.float().clamp(0, 1)
    ok = torch.isfinite(means).all(-1) & torch.isfinite(scales).all(-1) & (quats.norm(dim=-1) > 0) & torch.isfinite(opac)
    idx = torch.nonzero(ok)[:, 0]
    if max_count is not None and len(idx) > max_count:
        idx = idx[torch.topk(opac[idx], max_count).indices]
    R = quat_to_rotmat(quats[idx] / quats[idx].norm(dim=-1, keepdim=True))
    M = R * scales[idx][:, None, :]
    cov = M @ M.transpose(1, 2)
    return {
        "centers": means[idx].cpu().numpy(),
        "covariances": cov.cpu().numpy(),
        "rgbs": rgb[idx].cpu().numpy(),
        "opacities": opac[idx, None].cpu().numpy(),
    }
