"""Typed configuration loaded from YAML.

Every component has one dataclass whose fields are documented where they are declared, and its
defaults are the defaults: a YAML file or a ``--set`` override is a small diff on top, deep-merged
by the one rule in :func:`merge` (:func:`resolve` puts the layers together). Loading validates
keys, types and ranges up front so that a typo in a YAML file stops the program with the file (or
``--set``), the key and what is allowed, before anything moves or trains.

Field constraints live in ``dataclasses.field(metadata=...)``:
``range=(lo, hi)`` (inclusive, either may be None), ``choices=(...)``, ``help="..."``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names where and what is allowed."""

    def __init__(self, source: str, key: str, message: str):
        self.source = source
        self.key = key
        self.message = message
        super().__init__(f"{source}: {key}: {message}")


def option(default: Any = dataclasses.MISSING, *, help: str = "", range: tuple | None = None,
           choices: tuple | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with validation metadata (range is inclusive)."""
    meta = {"help": help, "range": range, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# Files shipped with the package
# --------------------------------------------------------------------------------------------

def share_dir() -> Path:
    """Where ``config/`` and ``sim/`` live: a source checkout, ``pip install .`` or colcon.

    A source or editable checkout has them at the repository root; ``pip install .`` and colcon
    both install them as data files under ``<prefix>/share/se_robot`` (ament's layout), which a
    ROS machine can also find through the ament index.
    """
    pkg = Path(__file__).resolve().parent
    candidates = [pkg.parent, Path(sys.prefix) / "share" / "se_robot"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "se_robot")
    for candidate in candidates:
        if (candidate / "sim").is_dir() and (candidate / "config").is_dir():
            return candidate
    raise FileNotFoundError(
        f"se_robot data files (sim/, config/) not found in any of {[str(c) for c in candidates]}; "
        "reinstall the package (pip install . or colcon build)")


def config_path(*parts: str) -> Path:
    return share_dir().joinpath("config", *parts)


def sim_path(*parts: str) -> Path:
    return share_dir().joinpath("sim", *parts)


def named_config(kind: str, name_or_path: str | Path, hide_suffix: str = "") -> Path:
    """``config/<kind>/<name>.yaml`` for a bare name, or the given YAML path as is.

    An unknown name fails listing the names there are (without those ending in ``hide_suffix``).
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    path = config_path(kind, f"{name_or_path}.yaml")
    if not path.exists():
        names = sorted(p.stem for p in path.parent.glob("*.yaml") if not (hide_suffix and p.stem.endswith(hide_suffix)))
        raise ConfigError(str(path), "<file>", f"no {kind.rstrip('s')} named {str(name_or_path)!r}; available: {names}")
    return path


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "<file>", "file does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<file>", f"not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "<root>", f"expected a mapping, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------
# Generic dataclass construction with validation
# --------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, source, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(source, key, f"expected {tp}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(source, key, f"got {value!r}, allowed: {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(source, key, f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, source, key): _convert(v, vt, source, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(source, key, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")


def _check_meta(value: Any, f: dataclasses.Field, source: str, key: str) -> None:
    lo_hi = f.metadata.get("range")
    if lo_hi is not None and value is not None:
        lo, hi = lo_hi
        vals = value if isinstance(value, (list, tuple)) else [value]
        for v in vals:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(source, key, f"{v!r} is out of range [{lo}, {hi}]")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(source, key, f"got {value!r}, allowed: {', '.join(map(str, choices))}")


def from_dict(cls: type[T], data: Any, source: str = "<config>", prefix: str = "") -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys and wrong types or ranges."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(source, prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(source, where, f"unknown key; allowed keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, key, "missing required key")
            continue
        value = _convert(data[name], hints[name], source, key)
        _check_meta(value, f, source, key)
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(source, prefix or "<root>", str(e)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """A plain structure (for YAML, checkpoints and ROS parameters)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load(cls: type[T], path: str | Path, overrides: dict | None = None) -> T:
    """Load ``cls`` from a YAML file, with optional overrides deep-merged on top."""
    layers = [(str(path), read_yaml(path))]
    if overrides:
        layers.append(("<overrides>", overrides))
    return resolve(cls, layers)


def replace(obj: T, source: str = "<overrides>", **changes: Any) -> T:
    """``dataclasses.replace`` with the same validation as loading."""
    data = to_dict(obj)
    data.update(changes)
    return from_dict(type(obj), data, source)


def help_text(cls: type) -> str:
    lines = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        extra = f" range={meta['range']}" if meta.get("range") else ""
        extra += f" choices={meta['choices']}" if meta.get("choices") else ""
        lines.append(f"  {f.name} = {default!r}{extra}  {meta.get('help', '')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Layers: the defaults, then files, then command-line overrides, deep-merged
# --------------------------------------------------------------------------------------------

Layer = tuple[str, dict]
"""``(source, mapping)``: where a layer of settings comes from (a file, ``--set``) and what it sets."""


def merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``; a mapping in ``top`` changes only the keys it names, at any depth.

    The one merge rule for every layer, so ``--set agent.sac.actor_lr=1e-3`` keeps the rest of a
    recipe's ``agent.sac``. Neither argument is modified.
    """
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_set(pairs: Iterable[str], source: str = "--set") -> dict:
    """``["replay.capacity=1000", "agent.lr=3e-4"]`` -> nested dict; values parsed as YAML."""
    out: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(source, pair, "expected key=value (e.g. replay.capacity=50000)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(source, key, f"value {text!r} is not valid YAML: {e}") from None
        if isinstance(value, str):
            try:      # YAML 1.1 reads 3e-4 (no dot) as a string; a number is what was meant
                value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "+inf") else value
            except ValueError:
                pass
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(source, key, f"{part} is given a value by another --set; it cannot also have keys")
        node[parts[-1]] = value
    return out


def has_key(data: dict, dotted: str) -> bool:
    """Whether the nested mapping ``data`` holds the dotted key ``dotted`` (``"replay.frame_stack"``)."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def reject_replaced(data: dict, replaced: Mapping[str, str], source: str) -> None:
    """Stop on a key that is no longer a setting, saying which key replaces it.

    ``replaced`` maps the old dotted key to the key that now sets its value (with a word on why).
    """
    for old, new in replaced.items():
        if has_key(data, old):
            raise ConfigError(source, old, f"no longer a setting; use {new}")


def _source_of(key: str, layers: Sequence[Layer]) -> str | None:
    """The last layer that set ``key`` (or a non-mapping where a mapping above it belongs): the
    layer an error about ``key`` should name; None when only the defaults set it."""
    parts = key.split("[")[0].split(".")
    for source, data in reversed(layers):
        node: Any = data
        for depth, part in enumerate(parts, 1):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
            if depth == len(parts) or not isinstance(node, dict):
                return source
    return None


def resolve(cls: type[T], layers: Sequence[Layer], replaced: Mapping[str, str] | None = None) -> T:
    """``cls``'s defaults with each layer deep-merged on top, in order, then validated.

    A wrong key or value is reported with the layer that set it (the file's path, ``--set``, ...);
    a key in ``replaced`` stops with the key that replaces it (:func:`reject_replaced`).
    """
    data: dict = {}
    for source, layer in layers:
        reject_replaced(layer, replaced or {}, source)
        data = merge(data, layer)
    fallback = layers[-1][0] if layers else "<defaults>"
    try:
        return from_dict(cls, data, fallback)
    except ConfigError as e:
        source = _source_of(e.key, layers)
        if source is None or source == e.source:
            raise
        raise ConfigError(source, e.key, e.message) from None
