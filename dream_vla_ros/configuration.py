"""Typed configuration: dataclasses with defaults, loaded from YAML or ROS parameters with validation.

Every tunable of the package is a field of a frozen dataclass. This module turns plain mappings (a YAML
file, a section of a ROS ``--params-file``, or ROS parameters) into those dataclasses and refuses bad input
with one line that names the key:

- an unknown key lists the valid keys,
- a value of the wrong type names the key, the expected type and what was given,
- range checks live in each dataclass's ``__post_init__`` and raise :class:`ConfigError` through
  :func:`require`.

Nested dataclasses are nested mappings in YAML and dotted names (``limits.max_velocity``) as ROS
parameters, so the two views mirror each other one to one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dream_vla_ros.errors import ConfigError

T = TypeVar("T")

ROS_PARAMETERS_KEY = "ros__parameters"


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError naming ``key`` unless ``condition`` holds (for ``__post_init__`` checks)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in the dataclass's own form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_mapping(tp, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            items = [_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=False))]
        else:
            item_type = args[0] if args else Any
            items = [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if math.isnan(float(value)):
            raise ConfigError(f"{key}: NaN is not a valid value")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_mapping(cls: type[T], mapping: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} in {cls.__name__}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _convert(value, hints[name], f"{prefix}{name}") for name, value in mapping.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; a missing or malformed file raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


class _NoAliasDumper(yaml.SafeDumper):
    """SafeDumper that writes a value shared by two keys twice instead of as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_params_file(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write a ROS 2 params file (``node: {ros__parameters: {...}}``) and return its path.

    rcl's params parser refuses YAML anchors and aliases ("Will not support aliasing"), which PyYAML emits
    when one list object is the value of two parameters; this writer never emits them.
    """
    path = Path(path)
    path.write_text(yaml.dump(dict(document), Dumper=_NoAliasDumper, sort_keys=False))
    return path


def node_section(data: Mapping[str, Any], node_name: str, source: str = "config") -> dict[str, Any]:
    """Return the ``ros__parameters`` of ``node_name`` from a params-file mapping (``/**`` merged first)."""
    merged: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping) or ROS_PARAMETERS_KEY not in section:
            raise ConfigError(f"{source}: section {key!r} must hold a '{ROS_PARAMETERS_KEY}' mapping")
        merged.update(section[ROS_PARAMETERS_KEY] or {})
    return merged


def load_node_config(cls: type[T], path: str | Path, node_name: str, overrides: Mapping | None = None) -> T:
    """Load the parameters of ``node_name`` from a ROS params file into ``cls``, applying ``overrides``."""
    values = node_section(read_yaml(path), node_name, str(path))
    values = unflatten({**flatten(values), **flatten(dict(overrides or {}))})
    return from_mapping(cls, values)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys (the ROS parameter view)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def unflatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested mapping (inverse of :func:`flatten`)."""
    out: dict[str, Any] = {}
    for dotted, value in values.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def to_mapping(config: Any) -> dict[str, Any]:
    """Dataclass -> nested plain mapping (tuples become lists), suitable for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def field_types(cls: type) -> dict[str, Any]:
    """Dotted field name -> annotation for every leaf field of ``cls`` (the ROS parameter schema)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out.update({f"{f.name}.{k}": v for k, v in field_types(tp).items()})
        else:
            out[f.name] = tp
    return out
