"""The names the parsers offer: the entries of the method, head and dataset registries (name, kind
and one-line summary), without importing torch.

A registry entry stays the one place that knows its part; building a parser must not import every
part (the methods, heads and dataset loaders import torch), so the parsers read the registries'
built-in entries from :mod:`fewshot.cli.catalogue`, generated from the registries by
``python docs/tables.py`` (``tests/test_docs.py`` fails when it is not current). The registry
itself answers when its module is imported already (entries may have been registered at run time,
and nothing is left to save) or when an installed package adds entries through its entry-point
group."""

from __future__ import annotations

import sys
from functools import cache
from importlib import import_module, metadata

from . import catalogue

# registry -> (the module that holds it, its name there); the catalogue holds its built-in entries
LIVE = {"method": ("fewshot.registry", "METHODS"), "head": ("fewshot.heads", "HEADS"),
        "dataset": ("episodes.registry", "DATASETS")}
BUILTIN = {"method": catalogue.METHODS, "head": catalogue.HEADS, "dataset": catalogue.DATASETS}


@cache
def plugged_groups() -> frozenset[str]:
    """The entry-point groups of the installed packages (read once: installing a package does
    not change a running process)."""
    return frozenset(metadata.entry_points().groups)


def entries(what: str) -> dict[str, tuple[str, str]]:
    """Name -> (kind, summary) of every entry of registry ``what`` (``method``, ``head``,
    ``dataset``), in the registry's order."""
    module, name = LIVE[what]
    if module in sys.modules or catalogue.GROUPS[what] in plugged_groups():
        registry = getattr(import_module(module), name)
        return {n: (registry.get(n).kind, registry.get(n).summary) for n in registry.names()}
    return BUILTIN[what]


def names(what: str, kind: str | None = None) -> list[str]:
    """The entries of registry ``what`` (of ``kind``)."""
    return [n for n, (k, _) in entries(what).items() if kind is None or k == kind]


def summaries(what: str, kinds: tuple[str, ...] | None = None) -> str:
    """``name: summary; ...`` of the entries of registry ``what`` (of ``kinds``, in their order),
    for a flag's help."""
    found = entries(what)
    order = [n for k in kinds for n in names(what, k)] if kinds is not None else list(found)
    return "; ".join(f"{n}: {found[n][1]}" for n in order)
