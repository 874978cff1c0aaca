"""Poses and initialization from unposed photos (issue 5)."""
