"""The viser web viewer: live training view and offline run folders. May import only sparsesplat.rasterizer.

- ``camera``: the browser's camera as plain data (``ViewCamera``) and its conversion to ``Cameras``.
- ``render_view``: the render callback (viewer camera + settings -> ``render()`` -> 8-bit frame; RGB,
  expected depth through a colour map, alpha) for every primitive kind ``render()`` draws.
- ``state``: display settings, pause/stop, live training stats, shared by GUI, render threads and trainer.
- ``camera_path``: keyframes -> interpolated cameras -> ``.mp4`` / ``.gif``.
- ``scene``: ``ViewerScene``, what the caller hands over (a primitives getter, cameras, thumbnails, points).
- ``splats``: optional client-side Gaussian splats.
- ``app``: ``ViewerApp``, the viser server, GUI and one render thread per browser tab.

``recon`` loads run folders and wires training to the viewer (``recon/view_run.py``); viser is imported
only when a ``ViewerApp`` starts.
"""
