"""The sparsesplat command line as a user meets it: --version, --help, usage errors, inspect."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import sparsesplat


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "sparsesplat.recon.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sparsesplat {sparsesplat.__version__}"


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    for sub in ("inspect", "info"):
        assert sub in r.stdout


@pytest.mark.parametrize("args", [["bogus"], ["inspect"], ["inspect", ".", "--no-such-flag"]])
def test_usage_errors_are_one_line_with_exit_2(args):
    r = run_cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsesplat: error:"), r.stderr


def test_missing_scene_folder_is_a_clear_error(tmp_path):
    r = run_cli("inspect", tmp_path / "nope")
    assert r.returncode == 1
    assert "nope" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.needs_data
def test_inspect_fern_writes_contact_sheet(data_dir, tmp_path):
    r = run_cli("inspect", data_dir / "llff" / "fern", "--protocol", "llff3", "--downscale", "8", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "504x378" in r.stdout
    sheet = np.asarray(Image.open(tmp_path / "contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.shape[0] > 100 and sheet.std() > 10  # real pictures, not a blank sheet
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind
