"""The options that say what a command reads and where it writes, declared once for ``reconstruct`` and
``poses`` (both subclass ``SceneInput``, so the flags, their help and their defaults are the same)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

# Published sparse-view resolutions (DESIGN.md §9), used when the user leaves --downscale at 1 and the data is
# the protocol's own format: a factor or a target (W, H).
PROTOCOL_RESOLUTION = {("llff", "llff"): 8, ("blender", "blender"): (400, 400), ("dtu", "dtu"): (400, 300),
                       ("mip360", "colmap"): 4}


@dataclass
class SceneInput:
    data: tyro.conf.Positional[Path]
    """Folder of photos, or of a posed dataset (COLMAP, Blender, LLFF, DTU)."""
    out: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """Output folder: refused if it exists, see --overwrite (and, for reconstruct, --resume); reconstruct
    creates it when training starts."""
    protocol: Annotated[Optional[str], tyro.conf.arg(metavar="NAME")] = None
    """Sparse-view protocol choosing the training and test views: llff3, llff6, llff9, blender8, dtu3, dtu6,
    dtu9, mip360-12 or mip360-24 (none: every view trains and none is held out for testing). Poses are
    estimated from the training views only."""
    format: Annotated[str, tyro.conf.arg(metavar="{auto,photos,colmap,blender,llff,dtu}")] = "auto"
    """Scene format: auto (detected from the folder's files), photos, colmap, blender, llff or dtu."""
    downscale: Annotated[float, tyro.conf.arg(aliases=["--scale"])] = 1.0
    """Image downscale factor (2 = half size). Protocols set the published resolution when left at 1."""
    overwrite: bool = False
    """Replace an existing output folder."""

    def load(self):
        """The scene (``datasets.load``), at the protocol's published resolution when --downscale is left at 1."""
        from sparsesplat.datasets import detect_format, load

        downscale = self.downscale
        if downscale == 1.0 and self.protocol:
            family = self.protocol.split("-")[0].rstrip("0123456789")
            fmt = detect_format(self.data, self.protocol) if self.format == "auto" else self.format
            downscale = PROTOCOL_RESOLUTION.get((family, fmt), 1.0)
        return load(self.data, format=self.format, protocol=self.protocol, downscale=downscale)
