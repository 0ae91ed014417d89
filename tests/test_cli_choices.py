"""The names the parsers offer without torch (:mod:`fewshot.cli.choices`): the catalogue generated
from the registries (``python docs/tables.py``) is their built-in entries, in their order, and the
constants of the modules it names; the registry itself answers once it is imported or when an
installed package adds entries to it."""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path

import pytest

from fewshot.cli import build_parser, catalogue, choices
from fewshot.cli.options import REGISTRIES
from fewshot.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]


def builtin(registry) -> dict[str, tuple[str, str]]:
    """name -> (kind, summary) of the entries the packages themselves register, in order."""
    return {n: (registry.get(n).kind, registry.get(n).summary) for n in registry.names()
            if (getattr(registry.get(n).build, "__module__", "") or "").split(".")[0]
            in ("fewshot", "episodes")}


@pytest.mark.parametrize("what", list(REGISTRIES))
def test_the_catalogue_is_the_registries_builtin_entries(what):
    """Fails when a method, head or dataset is added, renamed, reordered or re-described without
    regenerating the catalogue."""
    registry = REGISTRIES[what]
    assert list(choices.BUILTIN[what].items()) == list(builtin(registry).items())
    assert catalogue.GROUPS[what] == registry.group and choices.LIVE[what][1] in dir(
        import_module(choices.LIVE[what][0]))


def test_the_catalogue_constants_are_their_modules():
    sys.path.insert(0, str(ROOT / "docs"))
    import tables

    for name, (module, attr) in tables.CONSTANTS.items():
        assert getattr(catalogue, name) == getattr(import_module(module), attr), name
    assert Path(catalogue.__file__).read_text() == tables.catalogue()


def test_options_offers_every_registry():
    action = build_parser().subcommands["options"]._option_string_actions["--of"]  # noqa: SLF001
    assert action.choices == tuple(REGISTRIES) == tuple(catalogue.GROUPS)


def test_the_catalogue_answers_until_the_registry_is_imported(monkeypatch):
    """A new process that has not imported the method registry, with no package adding methods,
    reads the catalogue: the same names, kinds and summaries as the registry."""
    monkeypatch.setitem(choices.LIVE, "method", ("fewshot.no_such_module", "METHODS"))
    monkeypatch.setattr(choices, "plugged_groups", frozenset)
    assert choices.entries("method") is catalogue.METHODS
    for kind in ("episodic", "supervised", "self-supervised", "semi-supervised"):
        assert choices.names("method", kind) == METHODS.names(kind)
    assert choices.summaries("method", ("supervised",)) == "; ".join(
        f"{n}: {METHODS.get(n).summary}" for n in METHODS.names("supervised"))


def test_the_registry_answers_when_a_package_adds_entries(tmp_path: Path, monkeypatch):
    """With an installed package in the registry's entry-point group, the registry is imported
    and answers (its entries and the package's)."""
    (tmp_path / "toy_method_registry.py").write_text(
        "from dataclasses import dataclass\n"
        "from episodes.registry import Registry\n"
        "THINGS = Registry('method', 'fewshot.methods')\n"
        "@dataclass\nclass Options:\n    size: int = 1\n"
        "THINGS.register('toy', Options, 'episodic', 'a plugged method')(lambda o: o)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_method_registry", raising=False)
    monkeypatch.setitem(choices.LIVE, "method", ("toy_method_registry", "THINGS"))
    monkeypatch.setattr(choices, "plugged_groups", frozenset)
    assert choices.entries("method") is catalogue.METHODS  # no package: the catalogue
    monkeypatch.setattr(choices, "plugged_groups", lambda: frozenset({"fewshot.methods"}))
    assert choices.entries("method") == {"toy": ("episodic", "a plugged method")}
    assert choices.summaries("method") == "toy: a plugged method"
    sys.modules.pop("toy_method_registry")
