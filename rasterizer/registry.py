"""The one registry of primitive kinds: what ``render()`` draws and what ``read_scene_ply`` reads.

Each kind (``kinds/<kind>/__init__.py``) registers a ``Kind``: its name (config.yaml's ``primitive``), the
primitive types it draws (matched exactly, so a subclass that is a kind of its own, like GES, registers
itself), the ``render()`` pipeline for them and the reader of its ``scene.ply``. The training side
(``recon/kinds``) registers its models under the same names. ``kinds/README.md`` says how to add a kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass(frozen=True)
class Kind:
    """A primitive kind.

    name: its ``--primitive`` / config.yaml name; types: the primitive classes it draws;
    pipeline: ``(prims, cams, impl, sh_degree, rasterize_mode, **options) -> render.Rendered``, the kind's
    projection, colours and rasterization (``impl`` is the backend module ``render()`` resolved);
    read_scene: ``path -> primitives`` (activated, render-ready) from the kind's ``scene.ply``, or None.
    """

    name: str
    types: tuple[type, ...]
    pipeline: Callable
    read_scene: Optional[Callable[[Path], object]] = None


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add ``kind`` (replacing one of the same name); ``render()`` then draws its types."""
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)


def kind_of(prims) -> Kind:
    """The kind that draws ``prims`` (by exact type), with an error naming the types that are drawn."""
    for kind in KINDS.values():
        if type(prims) in kind.types:
            return kind
    drawn = ", ".join(t.__name__ for k in KINDS.values() for t in k.types)
    raise TypeError(f"render() does not support {type(prims).__name__}; it draws {drawn}")


def named(name: str) -> Kind:
    """The kind called ``name``, with an error listing the known names."""
    if name not in KINDS:
        raise ValueError(f"unknown primitive {name!r}; choose one of {', '.join(sorted(KINDS))}")
    return KINDS[name]
