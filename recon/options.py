"""Ranges of the commands' numeric options, checked right after parsing (before any work is done).

Every int and float field of a command's configuration tree is checked: by default it must be finite and
not negative (steps, counts, learning rates, weights, sizes); ``RANGES`` tightens that per field, matched on
the end of the field's dotted path (``train.default.refine_every`` matches ``refine_every``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Iterator

UNIT = (0.0, 1.0)
# name (end of the dotted path) -> (low, high, low_open, high_open); None: no bound on that side
RANGES: dict[str, tuple] = {
    "downscale": (0, None, True, False),
    "port": (1, 65535, False, False),
    "sh_degree": (0, 3, False, False),
    "points_per_convex": (3, 8, False, False),
    "seed": (0, 2**32 - 1, False, False),
    "diffusion_timestep": (0, 999, False, False),
    "depth_smoothness_order": (1, 2, False, False),
    "depth_smoothness_until": (0, 1, True, False),
    "depth_smoothness_texture": (0, None, True, False),
    "transient_start": (*UNIT, False, False),
    "multiview_start": (*UNIT, False, False),
    "coreg_start": (*UNIT, False, False),
    "multiview_window": (3, 31, False, False),
    "multiview_sources": (1, None, False, False),
    # divisors and sizes: 0 would divide by zero or build nothing
    "sh_every": (1, None, False, False),
    "max_anisotropy": (1, None, False, False),
    "background_tolerance": (0, 1, True, False),
    "refine_every": (1, None, False, False),
    "reset_every": (1, None, False, False),
    "cap_max": (1, None, False, False),
    "max_primitives": (1, None, False, False),
    "width": (1, None, False, False),
    "levels": (1, None, False, False),
    "crop": (8, None, False, False),
    "batch": (1, None, False, False),
    "diffusion_tile": (8, None, False, False),
    "init_size": (0, None, True, False),
    "init_sigma": (0, None, False, False),
    "reference_focal": (0, None, True, False),
    # fractions and probabilities
    "ssim_weight": (*UNIT, False, False),
    "dropout": (*UNIT, False, True),
    "opacity_decay": (*UNIT, False, True),
    "binocular_start": (*UNIT, False, False),
    "binocular_resolution": (*UNIT, True, False),
    "depth_start": (*UNIT, False, False),
    "probability": (*UNIT, False, False),
    "alpha_threshold": (*UNIT, False, False),
    "pseudo.start": (*UNIT, False, False),
    "pseudo.weight": (*UNIT, False, False),
    "init_opacity": (*UNIT, True, True),
    "reset_opacity": (*UNIT, True, False),
    "split_opacity": (*UNIT, True, False),
    "split_scale": (*UNIT, True, False),
    "split_shift": (*UNIT, False, False),
    "min_opacity": (*UNIT, False, False),
    "mesh_min_opacity": (*UNIT, False, False),
    "prune_opa": (*UNIT, False, False),
    "prune_weight": (*UNIT, False, False),
    "min_weight": (*UNIT, False, False),
}
DEFAULT = (0, None, False, False)


class OptionRangeError(ValueError):
    """A numeric option outside its range; the message names the option as the user typed it."""


def numeric_fields(obj, prefix: str = "") -> Iterator[tuple[str, object, object]]:
    """(dotted path, owner, field name) for every int/float field of a dataclass tree."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from numeric_fields(value, f"{prefix}{f.name}.")
        elif hints.get(f.name) in (int, float):
            yield f"{prefix}{f.name}", obj, f.name


def flag(path: str) -> str:
    """The command-line spelling of a field (the training settings are flattened: no ``train.`` prefix)."""
    return "--" + path.removeprefix("train.").replace("_", "-")


def _range(path: str) -> tuple:
    for name, rule in sorted(RANGES.items(), key=lambda kv: -len(kv[0])):
        if path == name or path.endswith("." + name):
            return rule
    return DEFAULT


def _describe(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def check_ranges(cfg) -> None:
    """Raise ``OptionRangeError`` for the first numeric option of ``cfg`` outside its range."""
    for path, owner, name in numeric_fields(cfg):
        value = getattr(owner, name)
        lo, hi, lo_open, hi_open = _range(path)
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value > lo if lo_open else value >= lo)
        ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise OptionRangeError(f"{flag(path)} must be {_describe(lo, hi, lo_open, hi_open)} (got {value})")
