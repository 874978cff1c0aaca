"""Triangle scenes on disk: sparsesplat's own PLY layout (loads back exactly) and mesh exports.

The scene PLY holds one binary little-endian ``triangle`` element (not ``vertex``, so point-cloud and 3DGS
viewers do not mistake it for points) of float32 properties, in this order::

    x0 y0 z0  x1 y1 z1  x2 y2 z2  sigma  opacity  f_dc_0..2  f_rest_0..(3*(K-1)-1)

with values stored *raw*, as the trainer keeps them: ``sigma`` is log(sigma), ``opacity`` a logit, SH
coefficients as in the 3DGS layout (``f_rest`` channel-major). A ``comment sparsesplat triangles`` line
names the layout.

Meshes (``save_triangle_mesh``): vertices deduplicated (exactly equal positions are merged), one colour per
face from SH degree 0 (RGB = clip(C0 * f_dc + 0.5, 0, 1)); PLY (``face`` with ``red green blue``), OBJ (one
material per quantized colour, with its .mtl beside it) or GLB (glTF 2.0 binary; per-face colours need
unshared vertices there, so each face keeps its own three).

Part of the rasterizer (the ground floor): imports nothing else from sparsesplat.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...fileio import atomic_path
from ...ply import float_records, write_binary_ply
from ...sh import C0
from .primitive import Triangles

LAYOUT_COMMENT = "sparsesplat triangles"


class TrianglePlyError(ValueError):
    """A file is unreadable or not a sparsesplat triangle scene."""


@dataclass
class RawTriangles:
    """Triangles as stored (and trained): vertices (N,3,3), log_sigma (N,), opacity_logits (N,), sh (N,K,3)."""

    vertices: torch.Tensor
    log_sigma: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor

    def activated(self) -> Triangles:
        return Triangles(self.vertices, torch.exp(self.log_sigma), torch.sigmoid(self.opacity_logits), sh=self.sh)


def triangle_property_names(num_sh: int) -> list[str]:
    names = [f"{a}{v}" for v in range(3) for a in "xyz"] + ["sigma", "opacity", "f_dc_0", "f_dc_1", "f_dc_2"]
    return names + [f"f_rest_{i}" for i in range(3 * (num_sh - 1))]


def _f32(t) -> np.ndarray:
    return (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).astype(np.float32)


def save_triangles_ply(path, raw: RawTriangles) -> Path:
    """Write ``raw`` in the triangle PLY layout (atomically)."""
    path = Path(path)
    n, K = raw.sh.shape[0], raw.sh.shape[1]
    sh = _f32(raw.sh)
    cols = [_f32(raw.vertices).reshape(n, 9), _f32(raw.log_sigma)[:, None], _f32(raw.opacity_logits)[:, None],
            sh[:, 0, :], sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (K - 1))]
    records = float_records(np.concatenate(cols, axis=1), triangle_property_names(K))
    write_binary_ply(path, records, element="triangle", comment=LAYOUT_COMMENT)
    return path


def load_triangles_ply(path) -> RawTriangles:
    """Read a triangle PLY written by ``save_triangles_ply`` (float32 tensors on the CPU)."""
    from plyfile import PlyData

    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except Exception as exc:  # noqa: BLE001  (plyfile raises many kinds)
        raise TrianglePlyError(f"{path}: not a readable PLY file ({exc})") from exc
    if "triangle" not in ply:
        raise TrianglePlyError(f"{path}: no 'triangle' element; this is not a sparsesplat triangle scene "
                               "(Gaussian scenes load with sparsesplat.rasterizer.ply)")
    el = ply["triangle"]
    have = {p.name for p in el.properties}
    n_rest = sum(1 for name in have if name.startswith("f_rest_"))
    if n_rest % 3:
        raise TrianglePlyError(f"{path}: {n_rest} f_rest properties is not a multiple of 3")
    K = n_rest // 3 + 1
    missing = [name for name in triangle_property_names(K) if name not in have]
    if missing:
        raise TrianglePlyError(f"{path}: properties {missing[:5]} missing from the triangle element")
    col = lambda name: np.asarray(el[name], dtype=np.float32)  # noqa: E731
    n = len(el.data)
    verts = np.stack([col(f"{a}{v}") for v in range(3) for a in "xyz"], 1).reshape(n, 3, 3)
    sh = np.zeros((n, K, 3), np.float32)
    sh[:, 0] = np.stack([col(f"f_dc_{c}") for c in range(3)], 1)
    if K > 1:
        rest = np.stack([col(f"f_rest_{i}") for i in range(3 * (K - 1))], 1)
        sh[:, 1:] = rest.reshape(n, 3, K - 1).transpose(0, 2, 1)
    t = torch.from_numpy
    return RawTriangles(t(verts), t(col("sigma")), t(col("opacity")), t(sh))


# ----------------------------------------------------------------------------------------------- meshes


def mesh_arrays(vertices, sh0, opacities=None, min_opacity: float = 0.0):
    """Deduplicated mesh of triangles: (positions (V,3) float32, faces (F,3) int64, face RGB (F,3) uint8).

    vertices (N,3,3); sh0 (N,3) degree-0 SH coefficients; triangles with opacity < ``min_opacity`` and
    non-finite ones are left out.
    """
    v = _f32(vertices).reshape(-1, 3, 3)
    rgb = np.clip(C0 * _f32(sh0).reshape(-1, 3) + 0.5, 0.0, 1.0)
    keep = np.isfinite(v).reshape(len(v), -1).all(1) & np.isfinite(rgb).all(1)
    if opacities is not None:
        keep &= _f32(opacities) >= min_opacity
    v, rgb = v[keep], rgb[keep]
    positions, inverse = np.unique(v.reshape(-1, 3), axis=0, return_inverse=True)
    faces = inverse.reshape(-1, 3).astype(np.int64)
    return positions.astype(np.float32), faces, np.round(rgb * 255).astype(np.uint8)


def save_triangle_mesh(path, positions: np.ndarray, faces: np.ndarray, face_rgb: np.ndarray) -> Path:
    """Write a mesh as .ply, .obj (+ .mtl) or .glb, chosen by the suffix of ``path``."""
    path = Path(path)
    writers = {".ply": _write_mesh_ply, ".obj": _write_mesh_obj, ".glb": _write_mesh_glb}
    if path.suffix.lower() not in writers:
        raise ValueError(f"{path}: mesh format must be .ply, .obj or .glb")
    writers[path.suffix.lower()](path, positions, faces, face_rgb)
    return path


def _write_mesh_ply(path: Path, positions, faces, rgb) -> None:
    F = len(faces)
    face = np.empty(F, dtype=[("n", "u1"), ("idx", "<i4", (3,)), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    face["n"], face["idx"] = 3, faces
    face["red"], face["green"], face["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ["ply", "format binary_little_endian 1.0", "comment sparsesplat triangle mesh",
              f"element vertex {len(positions)}", "property float x", "property float y", "property float z",
              f"element face {F}", "property list uchar int vertex_indices", "property uchar red",
              "property uchar green", "property uchar blue", "end_header"]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(np.ascontiguousarray(positions, dtype="<f4").tobytes())
            f.write(face.tobytes())


def _write_mesh_obj(path: Path, positions, faces, rgb, levels: int = 32) -> None:
    """OBJ has no per-face colour: faces are grouped by colour quantized to ``levels`` per channel, one
    material each (Kd), in ``<name>.mtl``."""
    q = np.minimum(rgb.astype(np.int64) * levels // 256, levels - 1)
    key = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    order = np.argsort(key, kind="stable")
    mtl = path.with_suffix(".mtl")
    lines = ["# sparsesplat triangle mesh", f"mtllib {mtl.name}"]
    lines += [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in positions]
    mats = []
    prev = None
    for i in order:
        if key[i] != prev:
            prev = key[i]
            name = f"c{key[i]}"
            kd = (q[i] + 0.5) / levels
            mats.append(f"newmtl {name}\nKd {kd[0]:.4f} {kd[1]:.4f} {kd[2]:.4f}\nKa 0 0 0\nKs 0 0 0\nd 1\nillum 1\n")
            lines.append(f"usemtl {name}")
        a, b, c = faces[i] + 1
        lines.append(f"f {a} {b} {c}")
    with atomic_path(mtl) as tmp:
        tmp.write_text("\n".join(mats))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _write_mesh_glb(path: Path, positions, faces, rgb) -> None:
    """glTF 2.0 binary with POSITION, COLOR_0 (normalized uchar RGBA) and indices; faces keep own vertices."""
    pos = np.ascontiguousarray(positions[faces].reshape(-1, 3), dtype="<f4")
    col = np.concatenate([np.repeat(rgb, 3, axis=0), np.full((len(pos), 1), 255, np.uint8)], 1)
    idx = np.arange(len(pos), dtype="<u4")
    blobs = [pos.tobytes(), np.ascontiguousarray(col).tobytes(), idx.tobytes()]
    views, offset = [], 0
    for b, target in zip(blobs, (34962, 34962, 34963)):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(b), "target": target})
        offset += (len(b) + 3) // 4 * 4
    lo = pos.min(0).tolist() if len(pos) else [0.0] * 3
    hi = pos.max(0).tolist() if len(pos) else [0.0] * 3
    doc = {
        "asset": {"version": "2.0", "generator": "sparsesplat"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "indices": 2, "mode": 4}]}],
        "buffers": [{"byteLength": offset}],
        "bufferViews": views,
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": len(pos), "type": "VEC3", "min": lo, "max": hi},
            {"bufferView": 1, "componentType": 5121, "normalized": True, "count": len(pos), "type": "VEC4"},
            {"bufferView": 2, "componentType": 5125, "count": len(idx), "type": "SCALAR"},
        ],
    }
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    binary = b"".join(b + b"\0" * (-len(b) % 4) for b in blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<4sII", b"glTF", 2, total))
            f.write(struct.pack("<I4s", len(js), b"JSON") + js)
            f.write(struct.pack("<I4s", len(binary), b"BIN\0") + binary)
