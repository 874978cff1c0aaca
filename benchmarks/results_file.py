"""Writing a benchmark's results table (``benchmarks/results/<stem>.md``) without losing what people wrote under it.

Sessions add their notes by hand below a table (what was run, what it means). Everything from the NOTES_MARKER
line on is kept when the benchmark writes the file again; the table above the marker is replaced.
"""

from __future__ import annotations

from pathlib import Path

NOTES_MARKER = "<!-- notes: written by hand, kept when the tables above are regenerated -->"


def kept_notes(path: Path) -> list[str]:
    """The hand-written notes of an existing results file (its NOTES_MARKER line and everything after), else []."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return lines[lines.index(NOTES_MARKER):] if NOTES_MARKER in lines else []


def write_results_md(path: Path, lines: list[str]) -> None:
    """``lines`` (the generated tables) as ``path``, followed by the notes the file held below its marker."""
    path.write_text("\n".join(lines + kept_notes(path)) + "\n")
