"""A new user's first hour with the CLI (issue 16): help that explains, failures that leave nothing behind,
output files like any other tool's, logs that read well in a terminal and in a file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, umask=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "sparsesplat.recon.cli", *map(str, args)], capture_output=True, text=True,
        timeout=timeout, env=env, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    from sparsesplat.recon.io import write_json

    old = os.umask(umask)
    try:
        write_json({"a": 1}, tmp_path / "m.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o666 & ~umask
