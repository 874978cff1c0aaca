"""Priors for sparse views (depth, diffusion repair, per-scene repair network). May import only sparsesplat.rasterizer."""
