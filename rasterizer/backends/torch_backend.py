"""The pure-PyTorch backend: the readable oracle (autograd gradients, tile-bucketed, slow), which the compiled
backends are held to. Each primitive kind's stages are in ``kinds/<k>/torch_stages.py``; the tile compositing
they share is ``torch_tiles.py``.
"""

NAME = "torch"
