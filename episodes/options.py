"""Typed options: a dataclass per method (or command), built from ``key=value`` text and checked
when it is parsed, with the valid names and choices in every error.

A config class is a dataclass whose fields have plain types: ``bool``, ``int``, ``float``, ``str``,
``Literal[...]`` (the choices), or one of those ``| None``. Range checks go in ``__post_init__`` and
raise ``ValueError`` naming the option (:func:`check`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

C = TypeVar("C")


def as_bool(value: Any, name: str) -> bool:
    """Read a boolean option given as a bool, 0/1 or a string ("true", "off", "0", ...)."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name} must be true or false, got {value!r}")


def _convert(value: Any, kind: Any, name: str) -> Any:
    """``value`` (possibly text) as type ``kind``, or a ValueError naming ``name``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], name)
    if origin is Literal:
        text = str(value).strip()
        if text not in args:
            raise ValueError(f"option {name} must be one of {', '.join(map(str, args))}; got "
                             f"{value!r}")
        return text
    if origin is tuple:
        parts = value if isinstance(value, list | tuple) else str(value).strip("()[] ").split(",")
        if len(parts) != len(args):
            raise ValueError(f"option {name} takes {len(args)} comma-separated values, got "
                             f"{value!r}")
        return tuple(_convert(v, a, name) for v, a in zip(parts, args, strict=True))
    if kind is bool:
        return as_bool(value, name)
    if kind is int:
        try:
            number = float(value) if not isinstance(value, int) else value
        except (TypeError, ValueError):
            number = None
        if isinstance(value, bool) or number is None or int(number) != number:
            raise ValueError(f"option {name} must be a whole number, got {value!r}")
        return int(number)
    if kind is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"option {name} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"option {name} must be a finite number, got {value!r}")
        return number
    if kind is str:
        return str(value)
    raise TypeError(f"option {name}: unsupported option type {kind!r}")


def parse_values(cls: type, options: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``options`` (values may be text from the command line) converted to the types of the
    fields of dataclass ``cls``.

    Args:
        what: how errors name the owner of the options ("protonet", "augmentation", ...).
    Raises:
        ValueError: an unknown option (the message lists the valid ones) or a value of the wrong
        type (the message names the option and what it takes).
    """
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(fields) if fields else "none"
        raise ValueError(f"unknown {what} option(s) {', '.join(unknown)}: the options of {what} "
                         f"are: {valid}")
    return {k: _convert(v, hints[k], k) for k, v in options.items()}


def parse_config(cls: type[C], options: Mapping[str, Any], what: str) -> C:
    """Build the config dataclass ``cls`` from ``options`` (see :func:`parse_values`); its
    ``__post_init__`` checks ranges and raises ``ValueError`` naming the option."""
    values = parse_values(cls, options, what)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}: give {', '.join(missing)}")
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """Every field of a config dataclass, converted (defaults included)."""
    return dataclasses.asdict(config)


def check(condition: bool, name: str, requirement: str, value: Any) -> None:
    """Raise ``ValueError("option NAME must be REQUIREMENT, got VALUE")`` unless ``condition``."""
    if not condition:
        raise ValueError(f"option {name} must be {requirement}, got {value!r}")


def describe(cls: type) -> str:
    """``name=default`` for every field of a config class (for help texts)."""
    return ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls)
                     if f.default is not dataclasses.MISSING)
