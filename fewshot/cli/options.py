"""``fewshot options NAME``: the typed options of a method (or a head, or a dataset) from its
registry entry's config dataclass: each option's name, type, default, choices or the bounds its
config checks, and what its docstring says of it. (Its arguments:
:func:`fewshot.cli.flags.options_arguments`.)"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, Literal

from episodes.registry import DATASETS, Registry

from ..heads import HEADS
from ..registry import METHODS

REGISTRIES: dict[str, Registry] = {"method": METHODS, "head": HEADS, "dataset": DATASETS}
PROBES = (-(10**9), 10**9)  # values far out of any range: the config's own check names its bounds


def type_text(kind: Any) -> str:
    """A field's type as a user reads it: ``int``, ``float | none``, ``one of a, b``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if args and origin is not tuple:
        return " | ".join("none" if a is type(None) else type_text(a) for a in args)
    if origin is tuple:
        return f"{len(args)} comma-separated {type_text(args[0])}"
    return getattr(kind, "__name__", str(kind))


def bounds(config: type, field: dataclasses.Field, kind: Any) -> str:
    """What the config's ``__post_init__`` requires of a number (read from its own error, e.g.
    ``>= 1``), or ``""``."""
    numbers = {int, float} & ({kind} | set(typing.get_args(kind)))
    if not numbers:
        return ""
    found = []
    for value in PROBES:
        try:
            config(**{field.name: value})
        except (ValueError, TypeError) as e:
            m = re.search(rf"option {re.escape(field.name)} must be (.*?), got", str(e))
            if m and m[1] not in found:
                found.append(m[1])
    return "; ".join(found)


def field_doc(config: type, name: str) -> str:
    """What the config's docstring says of option ``name``: the clause that starts with
    ````name````, up to the next clause (``""`` when no clause starts with it)."""
    doc = " ".join((config.__doc__ or "").split())
    m = re.search(rf"(?:^|[;:(.] )``{re.escape(name)}``:? ((?:\([^)]*\)|[^(])*?)(?:; |\. |\.$|$)",
                  doc)
    return re.sub(r":\w+:`~?([^`]*)`", r"\1", m[1]).replace("``", "").strip(" ,:") if m else ""


def option_rows(config: type) -> list[tuple[str, str, str, str, str]]:
    """(name, type, default, choices or bounds, doc) of every option a user sets."""
    hints = typing.get_type_hints(config)
    rows = []
    for f in dataclasses.fields(config):
        if not f.init or "from_data" in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        rows.append((f.name, type_text(hints[f.name]), str(default),
                     bounds(config, f, hints[f.name]), field_doc(config, f.name)))
    return rows


def run(args: argparse.Namespace) -> None:
    entry = REGISTRIES[args.of].get(args.name)  # an unknown name: one line listing the names
    rows = option_rows(entry.config)
    if not args.quiet:
        print(f"{args.of} {args.name}: {entry.summary} (--option KEY=VALUE)" if args.of == "method"
              else f"{args.of} {args.name}: {entry.summary}")
    if not rows:
        print("(no options)")
        return
    header = ("option", "type", "default", "bounds", "meaning")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
