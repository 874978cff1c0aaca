"""Niantic's ``.spz`` (read by SuperSplat/splat-transform, Niantic's and Adobe's libraries, Spark).

Versions 2 and 3 are one gzip stream holding a 16-byte header then the attribute blocks; version 4 is a
plain 32-byte header, a table of contents (compressed and uncompressed size per block, u64 each) and one
zstd frame per non-empty block. Header (little-endian)::

    u32 magic 0x5053474e ("NGSP")  u32 version  u32 count  u8 sh_degree  u8 fractional_bits (12)  u8 flags
    v2/v3: u8 reserved              v4: u8 streams  u32 toc_offset  12 reserved bytes

Blocks, in order, per splat: positions (3 x signed 24-bit fixed point, ``fractional_bits`` after the point:
1/4096 units, |x| < 2048), alphas (u8: 255 sigmoid(opacity)), colours (u8: 255 (0.15 f_dc + 0.5)), scales (u8:
16 (log_scale + 10), log-scales in [-10, 5.94]), rotations (v2: xyz of the quaternion with w >= 0 as
127.5 q + 127.5; v3/v4: "smallest three", a u32 with the largest component's index in bits 31-30 and the other
three, x y z w order, as sign + 9-bit magnitude of |q| / sqrt(1/2)), SH (u8: 128 x + 128, coefficient-major,
colour innermost; writers keep fewer bits, which readers need not know: here 6 for degree 1, 5 for the rest).

Axes: the values are the 3DGS PLY's as they are (what splat-transform 3.x and Niantic's tools with their
default options read and write); nothing is flipped. Writes version 3 by default (every current reader);
version 4 needs the ``zstandard`` package.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from ..kinds.gaussian.ply import RawGaussians
from .codec import SQRT1_2, ByteReader, as_numpy, logit, sigmoid, to_raw
from .errors import SplatFormatError

MAGIC = 0x5053474E
VERSIONS = (2, 3, 4)
WRITE_VERSION = 3
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15
SH_REST = {0: 0, 1: 3, 2: 8, 3: 15}  # coefficients per channel beyond the DC term
# SH precision written (degree 1, higher degrees). Niantic's and PlayCanvas's writers use 5 and 4 bits; one bit
# more each costs a quarter more bytes and keeps renders well above 40 dB of the PLY's (measured on the test
# views of trained scenes, benchmarks/results/formats.md: DTU scan37 41.5 -> 44.1 dB, lego 46.3 -> 50.2 dB).
SH1_BITS, SH_REST_BITS = 6, 5
LEGACY_HEADER = struct.Struct("<IIIBBBB")
V4_HEADER = struct.Struct("<IIIBBBBI12x")


def _round(x: np.ndarray) -> np.ndarray:
    """float32 round half away from zero (the reference C++ ``std::round``)."""
    x = np.asarray(x, np.float32)
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def _u8(x) -> np.ndarray:
    return np.clip(_round(x), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- rotations


def _pack_rotations(q_wxyz: np.ndarray) -> np.ndarray:
    q = q_wxyz[:, [1, 2, 3, 0]]  # x, y, z, w
    n = len(q)
    largest = np.argmax(np.abs(q), axis=1)
    negate = q[np.arange(n), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        mag = np.minimum(np.floor(511.0 * np.abs(q[:, i]) / SQRT1_2 + 0.5), 511).astype(np.uint32)
        sign = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        packed = (comp << 10) | (sign << 9) | mag
        comp = np.where(largest == i, comp, packed)
    return comp.astype("<u4").view(np.uint8).reshape(n, 4)


def _unpack_rotations(b: np.ndarray) -> np.ndarray:
    comp = b.reshape(-1, 4).copy().view("<u4").reshape(-1).astype(np.uint64)
    n = len(comp)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((n, 4))
    for i in (3, 2, 1, 0):
        skip = largest == i
        mag = (comp & 511).astype(np.float64)
        sign = np.where((comp >> 9) & 1, -1.0, 1.0)
        q[:, i] = np.where(skip, 0.0, sign * SQRT1_2 * mag / 511.0)
        comp = np.where(skip, comp, comp >> 10)
    rest = (q ** 2).sum(axis=1)
    q[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - rest))
    return q[:, [3, 0, 1, 2]]


def _rotations_v2(b: np.ndarray) -> np.ndarray:
    xyz = b.reshape(-1, 3).astype(np.float64) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(axis=1)))
    return np.concatenate([w[:, None], xyz], axis=1)


# --------------------------------------------------------------------------------------------- writing


def _blocks(raw: RawGaussians, sh1_bits: int, sh_rest_bits: int) -> tuple[int, list[bytes]]:
    a = as_numpy(raw)
    n, k = a["sh"].shape[:2]
    degree = {1: 0, 4: 1, 9: 2, 16: 3}[k]
    fixed = _round(a["means"].astype(np.float32) * np.float32(1 << FRACTIONAL_BITS)).astype(np.int64)
    if np.abs(fixed).max() >= 1 << 23:
        raise SplatFormatError(f"positions reach {np.abs(a['means']).max():.1f} units; .spz stores |x| < 2048 "
                               "(24-bit fixed point, 1/4096 steps): scale the scene down or use .compressed.ply")
    positions = (fixed & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(n, 3, 4)[:, :, :3]
    alphas = _u8(sigmoid(a["opacity_logits"]) * 255.0)
    colors = _u8(a["sh"][:, 0, :].astype(np.float32) * np.float32(COLOR_SCALE * 255.0) + np.float32(0.5 * 255.0))
    scales = _u8((a["log_scales"].astype(np.float32) + np.float32(10.0)) * np.float32(16.0))
    rotations = _pack_rotations(a["quats"])
    sh = (_round(a["sh"][:, 1:, :].astype(np.float32) * np.float32(128.0)) + 128).astype(np.int64)  # (n, k-1, 3)
    bucket = np.where(np.arange(k - 1) < 3, 1 << (8 - sh1_bits), 1 << (8 - sh_rest_bits))[None, :, None]
    sh = np.clip((sh + bucket // 2) // bucket * bucket, 0, 255).astype(np.uint8)
    blocks = [positions, alphas, colors, scales, rotations, sh]
    return degree, [np.ascontiguousarray(b).tobytes() for b in blocks]


def write_spz(path: Path, raw: RawGaussians, version: int = WRITE_VERSION, sh1_bits: int = SH1_BITS,
              sh_rest_bits: int = SH_REST_BITS) -> None:
    """Write ``raw`` as .spz ``version`` (3 or 4), SH degree 1 kept to ``sh1_bits`` and higher degrees to
    ``sh_rest_bits`` (1 to 8; fewer bits compress better, readers need not know them)."""
    if version not in (3, 4):
        raise SplatFormatError(f"{path}: .spz version {version} cannot be written (3 or 4)")
    if not (1 <= sh1_bits <= 8 and 1 <= sh_rest_bits <= 8):
        raise SplatFormatError(f"{path}: SH bits must be 1 to 8 (got {sh1_bits}, {sh_rest_bits})")
    degree, blocks = _blocks(raw, sh1_bits, sh_rest_bits)
    n = raw.means.shape[0]
    if version == 3:
        body = LEGACY_HEADER.pack(MAGIC, 3, n, degree, FRACTIONAL_BITS, 0, 0) + b"".join(blocks)
        data = gzip.compress(body, compresslevel=6, mtime=0)
    else:
        zstd = _zstandard(path)
        streams = [b for b in blocks if b]
        frames = [zstd.ZstdCompressor(level=12).compress(b) for b in streams]
        toc = b"".join(struct.pack("<QQ", len(f), len(s)) for f, s in zip(frames, streams))
        data = V4_HEADER.pack(MAGIC, 4, n, degree, FRACTIONAL_BITS, 0, len(streams), V4_HEADER.size) + toc
        data += b"".join(frames)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------------------------- reading


def _zstandard(path: Path):
    try:
        import zstandard
    except ImportError:
        raise SplatFormatError(f"{path}: .spz version 4 is zstd-compressed and needs the zstandard package "
                               "(pip install zstandard)") from None
    return zstandard


def _block_sizes(n: int, degree: int, version: int) -> list[int]:
    return [9 * n, n, 3 * n, 3 * n, (3 if version == 2 else 4) * n, 3 * SH_REST[degree] * n]


def _check_header(path: Path, magic: int, version: int, n: int, degree: int, frac: int) -> None:
    if magic != MAGIC:
        raise SplatFormatError(f"{path}: not an .spz file (magic {magic:#010x}, expected {MAGIC:#010x} 'NGSP')")
    if version not in VERSIONS:
        raise SplatFormatError(f"{path}: .spz version {version} is not supported (this reader knows "
                               f"{', '.join(map(str, VERSIONS))})")
    if n == 0:
        raise SplatFormatError(f"{path}: the .spz file holds no splats")
    if degree not in SH_REST:
        raise SplatFormatError(f"{path}: SH degree {degree} is not supported (0 to 3)")
    if not 0 <= frac <= 23:
        raise SplatFormatError(f"{path}: {frac} fractional position bits is not a valid .spz header")


def _legacy_blocks(path: Path, data: bytes) -> tuple[int, int, int, list[bytes]]:
    try:
        body = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise SplatFormatError(f"{path}: the .spz gzip stream is corrupt or truncated ({e})") from None
    r = ByteReader(body, path, ".spz file")
    magic, version, n, degree, frac, _flags, _ = LEGACY_HEADER.unpack(r.take(LEGACY_HEADER.size, "header"))
    _check_header(path, magic, version, n, degree, frac)
    if version == 4:
        raise SplatFormatError(f"{path}: .spz version 4 inside gzip is not a valid layout")
    names = ("positions", "alphas", "colours", "scales", "rotations", "SH")
    return version, degree, frac, [r.take(s, name) for s, name in zip(_block_sizes(n, degree, version), names)]


def _v4_blocks(path: Path, data: bytes) -> tuple[int, int, int, list[bytes]]:
    r = ByteReader(data, path, ".spz file")
    magic, version, n, degree, frac, _flags, streams, toc = V4_HEADER.unpack(r.take(V4_HEADER.size, "header"))
    _check_header(path, magic, version, n, degree, frac)
    if version != 4:
        raise SplatFormatError(f"{path}: an uncompressed .spz header must be version 4, not {version}")
    sizes = [s for s in _block_sizes(n, degree, 4) if s]
    if streams != len(sizes):
        raise SplatFormatError(f"{path}: {streams} data streams for SH degree {degree}; expected {len(sizes)}")
    if toc < V4_HEADER.size:
        raise SplatFormatError(f"{path}: table of contents at offset {toc}, inside the header")
    r.pos = toc
    entries = [struct.unpack("<QQ", r.take(16, "table of contents")) for _ in range(streams)]
    zstd = _zstandard(path)
    blocks = []
    for (packed, size), want, name in zip(entries, sizes, ("positions", "alphas", "colours", "scales",
                                                             "rotations", "SH")):
        if size != want:
            raise SplatFormatError(f"{path}: the {name} stream holds {size} bytes; {n} splats need {want}")
        try:
            block = zstd.ZstdDecompressor().decompress(r.take(packed, f"{name} stream"), max_output_size=size)
        except zstd.ZstdError as e:
            raise SplatFormatError(f"{path}: the {name} stream is corrupt ({e})") from None
        if len(block) != size:
            raise SplatFormatError(f"{path}: the {name} stream decompresses to {len(block)} bytes, not {size}")
        blocks.append(block)
    return version, degree, frac, blocks + [b""] * (6 - len(blocks))


def read_spz(path: Path) -> RawGaussians:
    data = path.read_bytes()
    if len(data) < 4:
        raise SplatFormatError(f"{path}: {len(data)} bytes is too short for an .spz file")
    if data[:2] == b"\x1f\x8b":
        version, degree, frac, blocks = _legacy_blocks(path, data)
    elif struct.unpack_from("<I", data)[0] == MAGIC:
        version, degree, frac, blocks = _v4_blocks(path, data)
    else:
        raise SplatFormatError(f"{path}: not an .spz file (neither gzip nor an 'NGSP' header)")
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = (np.frombuffer(b, np.uint8) for b in blocks)
    n = len(alpha_b)
    p = pos_b.reshape(n, 3, 3).astype(np.int32)
    fixed = p[:, :, 0] | (p[:, :, 1] << 8) | (p[:, :, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed / float(1 << frac)
    opacity = logit(alpha_b.astype(np.float64) / 255.0)
    dc = (color_b.reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    log_scales = scale_b.reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    quats = _rotations_v2(rot_b) if version == 2 else _unpack_rotations(rot_b)
    rest = (sh_b.reshape(n, SH_REST[degree], 3).astype(np.float64) - 128.0) / 128.0
    sh = np.concatenate([dc[:, None, :], rest], axis=1)
    return to_raw(means, quats, log_scales, opacity, sh)
