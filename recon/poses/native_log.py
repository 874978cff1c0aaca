"""Console output of native libraries, sent to a log file instead of the user's terminal.

COLMAP (through pycolmap) logs 90-200 lines per estimate with glog straight to the process's file descriptor
2, below anything Python's ``sys.stderr`` controls; redirecting the descriptor is the one way to move it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path


def _flush_native() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)  # C stdio buffers, so nothing written inside lands after the switch back


@contextlib.contextmanager
def native_output_to(path: Path):
    """Append what native code writes to stdout and stderr inside the block to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(path, "ab") as fh:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            yield path
        finally:
            _flush_native()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
