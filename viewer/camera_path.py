"""Camera paths: keyframes -> a smooth sequence of viewer cameras -> a video file.

Positions follow a centripetal-free uniform Catmull-Rom spline through the keyframes (it passes through every
keyframe), orientations are slerped between neighbouring keyframes and the field of view is interpolated
linearly. Videos are written with OpenCV (``.mp4``, codec mp4v) or imageio (``.gif``), atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from sparsesplat.rasterizer.fileio import atomic_path

from .camera import ViewCamera

VIDEO_SUFFIXES = (".mp4", ".gif")


def slerp(q0, q1, t: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (w, x, y, z), along the shorter arc."""
    q0 = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    q1 = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    d = float(q0 @ q1)
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:  # nearly equal: normalized lerp is exact enough and avoids 0/0
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(d)
    return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def _catmull_rom(p0, p1, p2, p3, t: float) -> np.ndarray:
    t2, t3 = t * t, t * t * t
    return 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)


def interpolate_path(keyframes: Sequence[ViewCamera], num_frames: int, loop: bool = False) -> list[ViewCamera]:
    """``num_frames`` cameras evenly spaced in keyframe time; the first (and, without ``loop``, the last)
    equal the first and last keyframes. Needs at least two keyframes."""
    if len(keyframes) < 2:
        raise ValueError(f"a camera path needs at least 2 keyframes, got {len(keyframes)}")
    if num_frames < 2:
        raise ValueError(f"a camera path needs at least 2 frames, got {num_frames}")
    keys = list(keyframes) + ([keyframes[0]] if loop else [])
    n_seg = len(keys) - 1
    pos = np.array([k.position for k in keys], dtype=np.float64)

    def point(i: int) -> np.ndarray:  # end points repeated (open path) or wrapped (loop)
        if loop:
            return pos[i % n_seg]
        return pos[min(max(i, 0), n_seg)]

    # the last frame of a loop is the first keyframe again, so leave it out to loop seamlessly
    ts = np.linspace(0.0, n_seg, num_frames, endpoint=not loop)
    out = []
    for s in ts:
        i = min(int(s), n_seg - 1)
        t = float(s - i)
        p = _catmull_rom(point(i - 1), point(i), point(i + 1), point(i + 2), t)
        q = slerp(keys[i].wxyz, keys[i + 1].wxyz, t)
        fov = (1 - t) * keys[i].fov_y + t * keys[i + 1].fov_y
        out.append(ViewCamera(tuple(q), tuple(p), float(fov), keys[0].aspect))
    return out


def write_video(path, frames: Iterable[np.ndarray], fps: float = 30.0) -> Path:
    """Write (H,W,3) uint8 RGB frames as ``.mp4`` or ``.gif``, atomically; returns the path."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video file {path} must end in one of {', '.join(VIDEO_SUFFIXES)}")
    frames = iter(frames)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            import imageio.v2 as imageio

            imageio.mimsave(tmp, list(frames), format="GIF", duration=1.0 / fps, loop=0)
        else:
            _write_mp4(tmp, frames, fps)
    return path


def _write_mp4(tmp: Path, frames, fps: float) -> None:
    import os

    import cv2

    target = tmp.with_name(tmp.name + ".mp4")  # OpenCV picks the container from the file's suffix
    writer = None
    try:
        for img in frames:
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"OpenCV could not open a video writer for {tmp}")
            writer.write(np.ascontiguousarray(img[..., ::-1]))
        if writer is None:
            raise ValueError("no frames to write")
        writer.release()
        os.replace(target, tmp)
    finally:
        if writer is not None:
            writer.release()
        if target.exists():
            target.unlink()


def render_path_video(path, keyframes: Sequence[ViewCamera], render_frame: Callable[[ViewCamera], np.ndarray],
                      num_frames: int, fps: float = 30.0, loop: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Interpolate the keyframes and render each camera with ``render_frame`` into a video file."""
    views = interpolate_path(keyframes, num_frames, loop)

    def frames():
        for k, v in enumerate(views):
            yield render_frame(v)
            if progress:
                progress(k + 1, len(views))

    return write_video(path, frames(), fps)
