"""Packaging invariants: the layout DESIGN.md fixes, and environment.yml in step with pyproject.toml."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_every_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    env = (REPO / "environment.yml").read_text().lower()
    env_names = {_name(m) for m in re.findall(r"^\s*-\s+([A-Za-z0-9_.\-]+[^\n]*)$", env, flags=re.M)}
    missing = [d for d in deps if _name(d) not in env_names]
    assert not missing, f"environment.yml lacks {missing}"


def test_subpackages_import_under_sparsesplat_only():
    for sub in ("recon", "rasterizer", "priors", "datasets", "viewer"):
        mod = importlib.import_module(f"sparsesplat.{sub}")
        assert Path(mod.__file__).resolve().parent == REPO / sub


def test_no_top_level_datasets_package_installed(tmp_path):
    """A top-level `datasets` from this project would shadow Hugging Face datasets for diffusers users."""
    code = "import importlib.util as u; s = u.find_spec('datasets'); print(s.origin if s else '')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True).stdout
    assert str(REPO / "datasets") not in out


def test_rasterizer_imports_nothing_else_from_the_project():
    for path in (REPO / "rasterizer").rglob("*.py"):
        text = path.read_text()
        for other in ("recon", "datasets", "priors", "viewer", "benchmarks"):
            assert f"sparsesplat.{other}" not in text, f"{path} imports sparsesplat.{other}"


def test_every_subpackage_is_listed_for_non_editable_installs():
    """A wheel built from pyproject.toml contains only the listed packages: a missing entry works in an
    editable checkout and breaks for users who `pip install .`."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    missing = []
    for pkg, folder in tool["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            name = ".".join([pkg, *rel.parts])
            if name not in listed:
                missing.append(name)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_setuptools_reads_the_project_table_without_deprecation_warnings():
    """`pip install` prints every setuptools deprecation warning to a new user (the `project.license` table
    form was one): the project table must read cleanly with the setuptools the install uses."""
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from setuptools.dist import Distribution\n"
        "from setuptools.config.pyprojecttoml import apply_configuration\n"
        "apply_configuration(Distribution(), 'pyproject.toml')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Deprecat" not in r.stderr and "Warning" not in r.stderr, r.stderr
