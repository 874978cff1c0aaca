"""A run's settings: config.yaml is written from the ``ReconstructConfig`` dataclasses and read back into them, so
the export, the viewer and the benchmarks see the settings a run used as the CLI's own types, with the
defaults of this version for settings the run predates."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml


class RunConfigError(ValueError):
    """A config.yaml that cannot be read as this version's settings."""


def config_dict(cfg) -> dict:
    """A (nested) settings dataclass as plain YAML-able data (paths as strings, tuples as lists)."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return str(v) if isinstance(v, Path) else v

    return conv(cfg)


def dump(cfg) -> str:
    return yaml.safe_dump(config_dict(cfg), sort_keys=False)


def read_run_config(run: Path, cls=None):
    """The settings of run folder ``run`` (its config.yaml) as ``cls`` (default: ``ReconstructConfig``).

    Settings the file lacks (added since) take this version's defaults; settings this version does not know
    (removed since) are left out and listed in the returned object's ``unknown_settings`` attribute. ``out`` is
    ``run`` (a run folder may have been moved since it was written)."""
    if cls is None:
        from .pipeline import ReconstructConfig as cls
    path = Path(run) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise RunConfigError(f"{path} could not be read ({e})") from e
    if not isinstance(data, dict):
        raise RunConfigError(f"{path} does not hold a settings mapping")
    unknown: list[str] = []
    data = {**data, "out": str(run)}  # the run folder is where it is now, wherever it was written
    cfg = from_dict(cls, data, unknown, path)
    object.__setattr__(cfg, "unknown_settings", unknown)
    return cfg


def run_primitive(run: Path) -> str:
    """The primitive kind run folder ``run`` holds: its settings' ``primitive``, read back; from a config.yaml that
    does not read back whole (hand-written, damaged), its ``primitive`` line; Gaussian when nothing says."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        return "gaussian"
    try:
        return read_run_config(run).primitive
    except RunConfigError:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return "gaussian"
        return str(data.get("primitive", "gaussian")) if isinstance(data, dict) else "gaussian"


def from_dict(cls, data: dict, unknown: list, where: Any = "", prefix: str = ""):
    """``cls`` built from ``data`` (as written by ``config_dict``), converting each value to its field's type."""
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            unknown.append(prefix + key)
            continue
        try:
            kwargs[key] = _convert(hints[key], value, unknown, where, f"{prefix}{key}.")
        except (TypeError, ValueError) as e:
            raise RunConfigError(f"{where}: setting {prefix}{key} = {value!r} is not a valid {hints[key]} ({e})") from e
    missing = [n for n, f in names.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RunConfigError(f"{where}: required setting(s) {', '.join(prefix + m for m in missing)} missing")
    return cls(**kwargs)


def _convert(tp, value, unknown: list, where, prefix: str):
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _convert(typing.get_args(tp)[0], value, unknown, where, prefix)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, unknown, where, prefix) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError("expected a mapping")
        return from_dict(tp, value, unknown, where, prefix)
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis or len(set(args)) == 1) else None
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_convert(inner, v, unknown, where, prefix) if inner is not None else v for v in items)
    if tp is Path:
        return Path(value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"one of {typing.get_args(tp)}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def changed_settings(cfg) -> dict:
    """Every setting of ``cfg`` (a settings dataclass with ``data`` and ``out``) that differs from its class's
    default, by dotted name ("train.fields": 2), as ``config_dict`` writes the values."""
    now, default = config_dict(cfg), config_dict(type(cfg)(data=cfg.data, out=cfg.out))

    def walk(a: dict, d: dict, prefix: str):
        for key, value in a.items():
            if isinstance(value, dict):
                yield from walk(value, d.get(key) or {}, prefix + key + ".")
            elif value != d.get(key):
                yield prefix + key, value

    return dict(walk(now, default, ""))


def with_settings(cfg, settings: dict):
    """A copy of settings dataclass ``cfg`` with ``settings`` {dotted name: value} ("train.binocular_resolution":
    0.5) replaced, each value converted to its field's type as config.yaml's are; a name that is not a setting
    raises ``RunConfigError``."""
    data = config_dict(cfg)
    for name, value in settings.items():
        *parents, key = name.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key not in node or isinstance(node[key], dict):
            raise RunConfigError(f"{name} is not a setting of {type(cfg).__name__}")
        node[key] = value
    unknown: list[str] = []
    return from_dict(type(cfg), data, unknown, "settings")


# Settings that belong to this command line, never to the run being continued.
_THIS_COMMAND = ("data", "out", "resume", "overwrite")


def resumed_settings(cfg, log=print):
    """The settings to continue run folder ``cfg.out`` with (``--resume``): the run's own (its config.yaml), with
    every setting this command line sets to other than its default taking this command line's value (so
    ``--resume --iters 6000`` trains the same run longer). A setting given on the command line at its default
    value cannot be told from one left out: it keeps the run's. Without a config.yaml, ``cfg`` as it is."""
    path = Path(cfg.out) / "config.yaml"
    if not path.is_file():
        return cfg
    settings = config_dict(read_run_config(cfg.out, type(cfg)))  # every setting, today's defaults where it lacks one
    now = config_dict(cfg)
    changed: list[str] = []
    for name, value in {**changed_settings(cfg), **{k: now[k] for k in _THIS_COMMAND}}.items():
        *parents, key = name.split(".")
        node = settings
        for part in parents:
            node = node[part]
        if name not in _THIS_COMMAND and node.get(key) != value:
            changed.append(f"{name} {node.get(key)!r} -> {value!r}")
        node[key] = value
    merged = from_dict(type(cfg), settings, [], path)
    said = f"; changed on this command line: {', '.join(changed)}" if changed else ""
    log(f"resuming with the settings of {path}{said}")
    return merged
