"""The one exception type loaders raise for bad user input."""

from __future__ import annotations


class DatasetError(ValueError):
    """A scene folder or file that cannot be loaded; the message names the file and what to do."""
