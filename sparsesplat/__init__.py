"""sparsesplat: real-time 3D scenes from a few photos.

The project's top-level folders install as subpackages: ``sparsesplat.rasterizer`` (primitives, cameras,
``render()``), ``sparsesplat.datasets`` (loaders and sparse-view protocols), ``sparsesplat.recon`` (the
pipeline and CLI), ``sparsesplat.priors`` and ``sparsesplat.viewer``. See DESIGN.md for the map.
"""

__version__ = "0.1.0"
