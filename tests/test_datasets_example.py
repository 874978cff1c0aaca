"""The bundled example scene and the script that makes it."""

from pathlib import Path

import torch

from sparsesplat.datasets import load
from sparsesplat.datasets.make_example import main
from sparsesplat.datasets.synthetic import make_cameras

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "synthetic_forward"


def test_bundled_example_loads_with_its_known_cameras():
    data = load(EXAMPLE)
    assert data.source_format == "colmap" and len(data) == 12 and (data.width, data.height) == (160, 120)
    cams = make_cameras(12, 160, 120, kind="forward")
    assert torch.allclose(data.cameras.viewmats.double(), cams.viewmats, atol=1e-5)
    assert torch.allclose(data.cameras.Ks.double(), cams.Ks, atol=1e-4)
    assert data.points.shape == (2000, 3) and data.images.std() > 0.1
    assert sum(f.stat().st_size for f in EXAMPLE.rglob("*") if f.is_file()) < 2_000_000


def test_make_example_cli(tmp_path):
    main([str(tmp_path / "ex"), "--views", "3", "--width", "24", "--height", "18", "--points", "50", "--layout", "llff"])
    data = load(tmp_path / "ex")
    assert data.source_format == "llff" and data.images.shape == (3, 18, 24, 3)
