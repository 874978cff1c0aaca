"""Gaussians through gsplat's CUDA kernels, as a peer of our own ``cuda`` backend
(``kinds/gaussian/gsplat_stages.py``); it draws no other kind.
"""

NAME = "gsplat"
DRAWS = "Gaussians only"  # what a kind that cannot run here is told (backends.kind_stages)
