"""The render callback: a viewer camera and the display settings -> an 8-bit image, through ``render()``.

It works for every primitive type ``render()`` draws (each kind registers itself with
``rasterizer.registry``), so nothing here knows what a Gaussian is. Modes:

- ``RGB``: the colour image over the chosen background;
- ``Depth``: the expected depth through a colour map between ``near`` and ``far`` (automatic: the 2nd and
  98th percentiles of the covered pixels), blended over the background by the alpha;
- ``Alpha``: accumulated opacity as grey.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from sparsesplat.rasterizer import Cameras, render

from .camera import ViewCamera, frame_size, view_to_cameras

MODES = ("RGB", "Depth", "Alpha")

# Colour maps as evenly spaced anchors in [0, 1], linearly interpolated. "rainbow": blue (near) -> red (far),
# "heat": black -> purple -> orange -> pale yellow, "gray": black -> white.
COLORMAPS: dict[str, np.ndarray] = {
    "rainbow": np.array([[0.19, 0.07, 0.23], [0.16, 0.47, 0.93], [0.10, 0.85, 0.75], [0.55, 0.98, 0.30],
                         [0.96, 0.80, 0.20], [0.95, 0.40, 0.10], [0.55, 0.05, 0.02]]),
    "heat": np.array([[0.0, 0.0, 0.02], [0.32, 0.07, 0.50], [0.72, 0.21, 0.47], [0.98, 0.53, 0.22],
                      [0.99, 0.99, 0.75]]),
    "gray": np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
}


@dataclass
class RenderSettings:
    """What the viewer's controls choose. ``resolution`` is the longer side of a still frame in pixels;
    while the camera moves frames are ``moving_scale`` times that. ``near``/``far`` of 0 mean automatic."""

    mode: str = "RGB"
    resolution: int = 512
    moving_scale: float = 0.4
    background: tuple = (0.0, 0.0, 0.0)
    colormap: str = "rainbow"
    near: float = 0.0
    far: float = 0.0
    backend: str = "auto"
    sh_degree: Optional[int] = None
    options: dict = field(default_factory=dict)
    look: Optional[tuple] = None
    """A training photo's look: its colour transform [A | b] (12 numbers, row-major 3x4) applied to RGB frames;
    None: the neutral look."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"render mode must be one of {MODES}, got {self.mode!r}")
        if self.colormap not in COLORMAPS:
            raise ValueError(f"colormap must be one of {tuple(COLORMAPS)}, got {self.colormap!r}")


EMPTY_DEPTH = 1e3  # depth sent for pixels the scene barely covers, so 3D overlays there stay visible


@dataclass
class Frame:
    """One rendered frame: ``image`` (H,W,3) uint8, the ``cameras`` used, the depth range (Depth mode) and
    ``depth`` (H,W) float32: the expected depth where alpha >= 0.5, else ``EMPTY_DEPTH`` (the browser uses it
    to hide frusta and points behind the scene)."""

    image: np.ndarray
    cameras: Cameras
    near: float = 0.0
    far: float = 0.0
    depth: Optional[np.ndarray] = None


def apply_colormap(t: np.ndarray, name: str = "rainbow") -> np.ndarray:
    """Map values ``t`` (any shape, clipped to [0, 1]) to RGB in [0, 1], shape ``t.shape + (3,)``."""
    anchors = COLORMAPS[name]
    x = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float64)), 0.0, 1.0) * (len(anchors) - 1)
    i = np.minimum(x.astype(np.int64), len(anchors) - 2)
    w = (x - i)[..., None]
    return anchors[i] * (1 - w) + anchors[i + 1] * w


def depth_range(depth: np.ndarray, alpha: np.ndarray) -> tuple[float, float]:
    """Automatic near/far: the 2nd and 98th percentiles of the depth where alpha > 0.5 (else of alpha > 0)."""
    covered = depth[alpha > 0.5]
    if covered.size == 0:
        covered = depth[alpha > 0]
    if covered.size == 0:
        return 0.0, 1.0
    near, far = np.percentile(covered, [2.0, 98.0])
    return float(near), float(max(far, near + 1e-6))


def colorize_depth(depth: np.ndarray, alpha: np.ndarray, near: float, far: float, colormap: str,
                   background) -> np.ndarray:
    """(H,W) expected depth and (H,W) alpha -> (H,W,3) in [0,1]: ``colormap((d - near) / (far - near))``
    over the background, weighted by alpha (so empty space shows the background)."""
    t = (depth - near) / max(far - near, 1e-12)
    rgb = apply_colormap(t, colormap)
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    return rgb * a + np.asarray(background, dtype=np.float64) * (1 - a)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.nan_to_num(img) * 255.0), 0, 255).astype(np.uint8)


def _device_of(prims) -> torch.device:
    ref = next(v for v in vars(prims).values() if isinstance(v, torch.Tensor))
    return ref.device


@torch.no_grad()
def render_cameras(prims, cams: Cameras, settings: RenderSettings) -> Frame:
    """Render one camera with the settings' mode; see the module docstring."""
    bg = torch.tensor(settings.background, dtype=torch.float32)
    out = render(prims, cams, backend=settings.backend, sh_degree=settings.sh_degree, background=bg.to(cams.device),
                 render_mode="RGB+ED", **settings.options)
    alpha = out.alphas[0, ..., 0].float().cpu().numpy()
    depth = out.depths[0, ..., 0].float().cpu().numpy()
    occluding = np.where(alpha >= 0.5, depth, EMPTY_DEPTH).astype(np.float32)
    if settings.mode == "RGB":
        rgb = out.colors[0].float().cpu().numpy()
        if settings.look is not None:
            m = np.asarray(settings.look, np.float32).reshape(3, 4)
            rgb = rgb @ m[:, :3].T + m[:, 3]
        return Frame(to_uint8(rgb), cams, depth=occluding)
    if settings.mode == "Alpha":
        return Frame(to_uint8(np.repeat(alpha[..., None], 3, axis=-1)), cams, depth=occluding)
    near, far = settings.near, settings.far
    if not far > near:
        near, far = depth_range(depth, alpha)
    img = colorize_depth(depth, alpha, near, far, settings.colormap, settings.background)
    return Frame(to_uint8(img), cams, near, far, depth=occluding)


def render_view(prims, view: ViewCamera, settings: RenderSettings, moving: bool = False) -> Frame:
    """The render callback: the viewer camera -> ``Cameras`` at the settings' resolution (scaled by
    ``moving_scale`` while the camera moves) -> ``render()`` -> an 8-bit frame."""
    long_side = settings.resolution * (settings.moving_scale if moving else 1.0)
    width, height = frame_size(view.aspect, max(16, int(round(long_side))))
    cams = view_to_cameras(view, width, height, device=_device_of(prims))
    return render_cameras(prims, cams, settings)
