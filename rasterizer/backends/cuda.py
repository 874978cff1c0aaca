"""The CUDA backend: the extension built from ``csrc/cuda`` and every kind's ``kinds/<k>/*.cu`` (the same math
headers as the CPU backend). Each primitive kind binds its stages to it (``kinds/<k>/compiled_stages.py``);
the extension is built on first call and needs a CUDA build of PyTorch plus nvcc (``rasterizer/build.py``).
Inputs must be CUDA tensors.
"""

NAME = "cuda"
