"""sparsesplat's own PLY layout for ``Convexes`` (3D Convex Splatting), read back exactly.

One ``convex`` element per convex, binary little-endian float32 properties, activated values (what
``render()`` takes) so a save/load round trip is bit-exact for float32 inputs:

    p0_x p0_y p0_z ... p{P-1}_x p{P-1}_y p{P-1}_z   the P points (3 <= P <= 8)
    delta sigma opacity                            smoothness, sharpness, opacity in [0, 1]
    f_dc_0 f_dc_1 f_dc_2 f_rest_0 ...               SH coefficients in the 3DGS order (f_rest channel-major)

A comment line ``comment sparsesplat convexes v1`` names the layout. Colours given as plain RGB are stored
as degree-0 SH (RGB = SH0 * C0 + 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...ply import PlyFormatError, float_records, write_binary_ply
from ...sh import rgb_to_sh0
from .primitive import Convexes

LAYOUT_COMMENT = "sparsesplat convexes v1"


def convex_property_names(P: int, num_sh: int) -> list[str]:
    names = [f"p{i}_{a}" for i in range(P) for a in "xyz"]
    names += ["delta", "sigma", "opacity", "f_dc_0", "f_dc_1", "f_dc_2"]
    return names + [f"f_rest_{i}" for i in range(3 * (num_sh - 1))]


def save_convexes_ply(path, convexes: Convexes) -> None:
    """Write ``convexes`` (activated values) to ``path`` atomically; folders are created."""
    cv = convexes
    n, P = cv.points.shape[:2]
    sh = cv.sh if cv.sh is not None else rgb_to_sh0(cv.colors.detach().float())[:, None, :]
    k = sh.shape[1]
    f32 = lambda t: t.detach().to("cpu", torch.float32).numpy()  # noqa: E731
    sh_np = f32(sh)
    columns = [
        f32(cv.points).reshape(n, 3 * P),
        f32(cv.delta)[:, None], f32(cv.sigma)[:, None], f32(cv.opacities)[:, None],
        sh_np[:, 0, :],
        sh_np[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),
    ]
    records = float_records(np.concatenate(columns, axis=1), convex_property_names(P, k))
    write_binary_ply(Path(path), records, element="convex", comment=LAYOUT_COMMENT)


def load_convexes_ply(path) -> Convexes:
    """Read a file written by ``save_convexes_ply`` as ``Convexes`` (SH colours)."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PLY file at {path}")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:
        raise PlyFormatError(f"{path} is not a readable PLY file ({type(e).__name__}: {e})") from None
    if "convex" not in [el.name for el in ply.elements]:
        raise PlyFormatError(f"{path} has no 'convex' element: it is not a sparsesplat convex scene "
                             "(Gaussian scenes load with load_gaussians_ply)")
    el = ply["convex"]
    props = {p.name for p in el.properties}
    P = sum(1 for i in range(9) if f"p{i}_x" in props)
    n_rest = sum(1 for p in props if p.startswith("f_rest_"))
    if not 3 <= P <= 8 or n_rest not in (0, 9, 24, 45):
        raise PlyFormatError(f"{path}: {P} points per convex and {n_rest} f_rest properties; expected 3 to 8 "
                             "points and 0, 9, 24 or 45 f_rest")
    k = 1 + n_rest // 3
    names = convex_property_names(P, k)
    missing = [name for name in names if name not in props]
    if missing:
        raise PlyFormatError(f"{path}: the convex element lacks {', '.join(missing)}")
    n = el.count
    a = np.empty((n, len(names)), dtype=np.float32)
    for i, name in enumerate(names):
        a[:, i] = el[name]
    t = torch.from_numpy(a)
    o = 3 * P
    rest = t[:, o + 6:].reshape(n, 3, k - 1).transpose(1, 2)
    sh = torch.cat([t[:, None, o + 3:o + 6], rest], dim=1).contiguous()
    return Convexes(t[:, :o].reshape(n, P, 3).contiguous(), t[:, o].contiguous(), t[:, o + 1].contiguous(),
                    t[:, o + 2].contiguous(), sh=sh)
