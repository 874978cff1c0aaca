"""The JIT build's cache folder and its lock: a killed build must not block later ones forever."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from sparsesplat.rasterizer import build


def test_stale_torch_lock_from_a_killed_build_is_removed(tmp_path):
    (tmp_path / "lock").touch()  # what torch leaves behind when a build is killed
    with build._exclusive(tmp_path):
        assert not (tmp_path / "lock").exists()


def test_the_build_lock_is_released_when_its_holder_dies(tmp_path):
    code = (f"import os, pathlib; from sparsesplat.rasterizer import build\n"
            f"cm = build._exclusive(pathlib.Path({str(tmp_path)!r})); cm.__enter__(); os._exit(1)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 1
    done = subprocess.run(
        [sys.executable, "-c", f"import pathlib; from sparsesplat.rasterizer import build\n"
                               f"with build._exclusive(pathlib.Path({str(tmp_path)!r})): print('got it')"],
        capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "got it"


def test_each_checkout_builds_in_its_own_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = build.build_directory("cpu")
    monkeypatch.setattr(build, "CSRC", tmp_path / "other_checkout" / "csrc")
    assert build.build_directory("cpu") != here and build.build_directory("cpu").parent == tmp_path


def test_tests_and_the_cli_share_one_build_cache(tmp_path):
    """`sparsesplat info` right after `make test` must find the library the tests built: the cache folder
    may not depend on whether the extension was reached through the test set-up or the command line."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}  # a user who never set it
    env["HOME"] = str(tmp_path)
    show = "from sparsesplat.rasterizer.build import build_directory; print(build_directory('cpu'))"
    via_tests = f"import sys; sys.path.insert(0, 'tests'); import conftest, test_rasterizer_cpu; {show}"
    dirs = [subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=120) for code in (via_tests, show)]
    assert all(r.returncode == 0 for r in dirs), [r.stderr for r in dirs]
    assert dirs[0].stdout == dirs[1].stdout


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler on this machine")
def test_cpu_backend_builds_where_a_compiler_exists():
    """The CPU backend's tests skip when it cannot be built (a user without a compiler); here, with one,
    a failing build is a failure, not a silent skip of every compiled-backend test."""
    from sparsesplat.rasterizer.build import load_extension

    module = load_extension("cpu")
    for name in ("rasterize_fwd", "rasterize_bwd", "sh_colors_fwd", "sh_colors_bwd"):
        assert hasattr(module, name)
