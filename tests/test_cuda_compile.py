"""The CUDA sources compile with plain nvcc (no GPU or CUDA PyTorch needed), so a broken kernel is caught here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sparsesplat.rasterizer.build import CSRC, sources

CU_FILES = [p for p in sources("cuda") if p.suffix == ".cu"]


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for cand in sorted(Path("/usr/local").glob("cuda*/bin/nvcc")):
        return str(cand)
    return None


@pytest.fixture(scope="module")
def nvcc_results(tmp_path_factory):
    """Compiles every .cu file to an object, all at once (the compiles are independent)."""
    if _nvcc() is None:
        pytest.skip("nvcc is not installed (on PATH or under /usr/local/cuda*)")
    from torch.utils.cpp_extension import include_paths

    out_dir = tmp_path_factory.mktemp("nvcc")
    procs = {}
    for source in CU_FILES:
        cmd = [
            _nvcc(), "-c", "-std=c++20", "-O1", "-arch=sm_80", "-I", str(CSRC),
            *[f"-I{p}" for p in include_paths()],
            # CPU wheels of PyTorch ship the c10/cuda headers without their generated config header
            "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
            "-DTORCH_EXTENSION_NAME=sparsesplat_cuda",
            str(source), "-o", str(out_dir / (source.stem + ".o")),
        ]
        procs[source.name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[name] = (proc.returncode, stdout + stderr, out_dir / (Path(name).stem + ".o"))
    return results


@pytest.mark.parametrize("source", CU_FILES, ids=lambda p: p.name)
def test_cu_file_compiles_with_nvcc(nvcc_results, source):
    code, message, obj = nvcc_results[source.name]
    assert code == 0, f"nvcc failed on {source.name}:\n{message}"
    assert obj.stat().st_size > 0


def test_there_are_cuda_sources():
    names = {p.name for p in CU_FILES}
    assert names >= {f"{k}_{stage}.cu" for k in ("gaussian", "triangle", "convex") for stage in ("projection", "rasterize")}
    assert (CSRC / "cuda" / "bindings.cpp").exists()
