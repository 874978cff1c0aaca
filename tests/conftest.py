"""Shared test set-up: where the real scenes are, and one OpenMP thread per xdist worker.

JIT-built extensions land in one known place, the one the command line uses (``$TORCH_EXTENSIONS_DIR`` when
set, else ``~/.cache/sparsesplat/torch_extensions/<torch>``): a test-only folder made `sparsesplat info`
rebuild what the tests had built."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if "TORCH_EXTENSIONS_DIR" not in os.environ:
    from sparsesplat.rasterizer.build import default_cache_root

    os.environ["TORCH_EXTENSIONS_DIR"] = str(default_cache_root())
# Under pytest-xdist every worker is a process of its own: one OpenMP thread each, or the workers' spinning
# threads oversubscribe the cores (measured here: renders up to 20x slower). Subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_data_dir() -> Path:
    """../shared/data beside the repository (or $SPARSESPLAT_DATA)."""
    return Path(os.environ.get("SPARSESPLAT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real scenes not found at {path} (set SPARSESPLAT_DATA to the folder holding lego and fern)")
    return path
