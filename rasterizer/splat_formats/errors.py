"""The one error every splat format raises for a file it cannot read or a scene it cannot write."""

from __future__ import annotations

from ..ply import PlyFormatError


class SplatFormatError(PlyFormatError):
    """A splat file is unreadable (truncated, wrong magic, unsupported version, corrupt) or a scene cannot be
    written in a format; the message names the file and the problem. A ``ValueError`` (via PlyFormatError),
    so the CLI prints it as one line."""
