"""ROS parameters <-> config dataclasses, one to one.

:func:`declare` declares one parameter per leaf field of a config dataclass (dotted names for nested
dataclasses, as in :func:`dream_vla_ros.configuration.field_types`) with the field's default and type, and a
description taken from the dataclass docstring when it documents the field. :func:`read` reads them back
and builds the dataclass with :func:`dream_vla_ros.configuration.from_mapping`, so a ``--params-file
config/x.yaml`` section and the YAML view of the dataclass are the same thing, checked the same way.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter

from dream_vla_ros.configuration import field_types, flatten, from_mapping, to_mapping, unflatten
from dream_vla_ros.errors import ConfigError

T = TypeVar("T")

_SCALARS = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
            float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAYS = {bool: ParameterType.PARAMETER_BOOL_ARRAY, int: ParameterType.PARAMETER_INTEGER_ARRAY,
           float: ParameterType.PARAMETER_DOUBLE_ARRAY, str: ParameterType.PARAMETER_STRING_ARRAY}


def parameter_type(annotation: Any) -> int:
    """The ROS parameter type of a dataclass field annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin is typing.Literal:
        return _SCALARS[type(args[0])]
    if origin in (tuple, list) and args:
        item = args[0]
        if typing.get_origin(item) is typing.Literal:
            item = type(typing.get_args(item)[0])
        if item in _ARRAYS:
            return _ARRAYS[item]
    raise ConfigError(f"cannot map {annotation!r} to a ROS parameter type")


def _defaults(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> default value of every leaf field (nested dataclasses without a usable default instance
    contribute their own field defaults; fields without any default are left out)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        value: Any = dataclasses.MISSING
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            try:
                value = f.default_factory()
            except ConfigError:
                value = dataclasses.MISSING
        if dataclasses.is_dataclass(hints[f.name]):
            if value is dataclasses.MISSING:
                out.update(_defaults(hints[f.name], f"{name}."))
            else:
                out.update({f"{name}.{k}": v for k, v in flatten(to_mapping(value)).items()})
        elif value is not dataclasses.MISSING:
            out[name] = value
    return out


def _field_docs(cls: type) -> dict[str, str]:
    """``name: text`` lines of a dataclass docstring -> {name: text} (continuation lines joined)."""
    docs: dict[str, str] = {}
    current = None
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        head, sep, text = stripped.partition(": ")
        names = [n.strip() for n in head.split("/")]
        if sep and all(n.isidentifier() for n in names):
            for n in names:
                docs[n] = text
            current = names
        elif current and stripped:
            for n in current:
                docs[n] += " " + stripped
        else:
            current = None
    return docs


def declare(node, cls: type) -> None:
    """Declare every leaf field of ``cls`` as a read-only-at-start parameter of ``node``."""
    defaults = _defaults(cls)
    docs: dict[str, str] = {}
    for name, annotation in field_types(cls).items():
        *parents, leaf = name.split(".")
        owner = cls
        for part in parents:
            owner = typing.get_type_hints(owner)[part]
        docs = _field_docs(owner)
        ptype = parameter_type(annotation)
        value = defaults.get(name)
        if isinstance(value, tuple):
            value = list(value)
        # Floats accept integers too (``rate: 100`` in a YAML file), as the dataclass does.
        dynamic = ptype in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_DOUBLE_ARRAY) and bool(value)
        descriptor = ParameterDescriptor(
            name=name,
            type=ParameterType.PARAMETER_NOT_SET if dynamic else ptype,
            description=docs.get(leaf, ""),
            dynamic_typing=dynamic,
        )
        if value is None or (isinstance(value, list) and not value):
            # No usable default (an empty list would be typed as a byte array): declare by type only.
            node.declare_parameter(name, Parameter.Type(ptype), descriptor)
        else:
            node.declare_parameter(name, value, descriptor)


def read(node, cls: type[T]) -> T:
    """Build ``cls`` from the node's parameters (declared by :func:`declare`); ConfigError names bad keys."""
    from rclpy.exceptions import ParameterUninitializedException

    values: dict[str, Any] = {}
    for name, annotation in field_types(cls).items():
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = None
        if value is None:
            value = () if typing.get_origin(annotation) in (tuple, list) else None
            if value is None:
                continue
        if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
            value = list(value)
        values[name] = value
    return from_mapping(cls, unflatten(values))
