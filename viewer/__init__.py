"""The viser web viewer (live training and offline run folders). May import only sparsesplat.rasterizer."""
