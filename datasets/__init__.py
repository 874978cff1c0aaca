"""Scene loading for sparsesplat: one ``load()`` for photos, COLMAP, Blender, LLFF and DTU scenes.

What lives here:
    loading.py    ``load()`` and format detection; reads only the views a protocol needs
    scene.py      ``SceneData`` (the loaded scene) and ``SceneListing`` (views before pixels are read)
    photos.py, colmap.py, blender.py, llff.py, dtu.py   one loader per format, each returning a listing
    protocols.py  published sparse-view train/test ids (LLFF, Blender 8, DTU, Mip-NeRF360)
    images.py, sizes.py   reading/resizing/undistorting images; downscale -> size and K scaling
    synthetic.py  procedural ray-cast scenes with exact ground truth; writers.py writes them in every format
    make_example.py  regenerates the bundled examples/ scene

Imports: only ``sparsesplat.rasterizer`` (``Cameras``) and third-party libraries (numpy, torch, PIL, cv2,
pycolmap, scipy). Conventions: OpenCV camera axes, world->camera viewmats, pixel centres at (j + 0.5, i + 0.5).
"""

from . import protocols
from .errors import DatasetError
from .loading import FORMATS, detect_format, load
from .protocols import blender8, dtu, llff, mip360
from .scene import SceneData, SceneListing, ViewRecord

__all__ = [
    "load", "detect_format", "FORMATS", "SceneData", "SceneListing", "ViewRecord", "DatasetError",
    "protocols", "llff", "blender8", "dtu", "mip360",
]
