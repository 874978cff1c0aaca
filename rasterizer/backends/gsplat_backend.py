"""Gaussians through gsplat's CUDA kernels, as a peer of our own ``cuda`` backend
(``kinds/gaussian/gsplat_stages.py``); it draws no other kind.
"""

NAME = "gsplat"
