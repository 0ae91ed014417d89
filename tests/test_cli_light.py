"""The light front of the command line: ``fewshot --help``, ``--version``, a mistyped command,
every command's ``--help`` and a mistyped flag are answered without importing torch, the choices
still those of the registries; the version comes from the package metadata."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import fewshot
from episodes.registry import DATASETS, option_names
from fewshot.cli import COMMANDS, build_parser, main
from fewshot.cli.data import data_options
from fewshot.cli.options import REGISTRIES
from fewshot.cli.parser import HelpFormatter
from fewshot.heads import HEADS
from fewshot.methods.protonet import ProtoNetConfig
from fewshot.refine import REFINES
from fewshot.registry import KINDS, method_names
from fewshot.version import library_version

PROBE = """
import sys
from fewshot.cli import main
try:
    main({argv!r})
except SystemExit as e:
    code = e.code
for heavy in ('torch', 'torchvision', 'scipy', 'numpy'):
    assert heavy not in sys.modules, heavy + ' was imported'
print('exit', code)
"""


def probe(argv: list[str]) -> tuple[int, str, str]:
    """Run ``fewshot ARGV`` in a new interpreter that fails if torch, torchvision, scipy or numpy
    was imported: (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]), done.stdout, done.stderr


@pytest.mark.parametrize("argv", [["--help"], [], ["--version"], ["trian"]])
def test_front_imports_no_torch(argv):
    assert probe(argv)[0] == (0 if argv in (["--help"], ["--version"]) else 2)


# what each command's help must offer: the registries' names (the parser's catalogue equals them)
OFFERS = {"train": lambda: method_names("episodic") + DATASETS.names(),
          "pretrain": lambda: [n for k in KINDS if k != "episodic" for n in method_names(k)][1:],
          "eval": lambda: HEADS.names() + DATASETS.names(), "options": lambda: list(REGISTRIES),
          "plot-embeddings": DATASETS.names, "predict": lambda: list(REFINES[1:])}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_imports_no_torch(command):
    """``fewshot COMMAND --help`` prints the full help, every choice of the registries in it,
    without importing torch, torchvision, scipy or numpy."""
    code, out, _ = probe([command, "--help"])
    text = " ".join(out.split())
    assert code == 0 and f"usage: fewshot {command}" in text
    assert [n for n in OFFERS.get(command, list)() if n not in text] == []


@pytest.mark.parametrize("argv", [[c, "--no-such-flag"] for c in COMMANDS]
                         + [["train", "--method", "simclr"], ["pretrain", "--method", "nope"],
                            ["eval", "--head", "nope"], ["train", "--dataset", "nope"],
                            ["eval", "--normalize", "1,2/0"], ["train", "--max-memory", "2XB"],
                            ["eval", "--checkpoint"], ["train", "--config"]])
def test_a_mistyped_flag_imports_no_torch(argv):
    """A flag the command does not take, or a value its parser refuses, is one line and exit
    status 2 before torch is imported (a command with required flags names those first)."""
    code, _, err = probe(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    named = ("--no-such-flag", "required") if argv[1] == "--no-such-flag" else (argv[1],)
    assert any(n in err for n in named), err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fewshot {fewshot.__version__}"
    assert fewshot.__version__ == library_version() != "unknown"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_mistyped_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "'train'" in err


def test_lazy_exports():
    """Every public name resolves; the names imported for type checkers and the API docs are
    the ones imported on first use, from the same modules."""
    assert fewshot.ProtoNet.__name__ == "ProtoNet"
    assert set(fewshot.__all__) <= set(dir(fewshot))
    tree = ast.parse(Path(fewshot.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If))  # if TYPE_CHECKING:
    typed = {a.name: "." + n.module for n in block.body for a in n.names}
    assert typed == fewshot._EXPORTS and set(typed) | {"__version__"} == set(fewshot.__all__)
    with pytest.raises(AttributeError):
        fewshot.no_such_name  # noqa: B018


ROOT = Path(__file__).resolve().parent.parent


def test_package_files():
    """The licence the metadata names, and the typing markers shipped as package data."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT" and "LICENSE" in project["project"]["license-files"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "2026 fewshot authors" in text
    data = project["tool"]["setuptools"]["package-data"]
    for package in ("fewshot", "episodes"):
        assert (ROOT / package / "py.typed").is_file() and "py.typed" in data[package]


@pytest.mark.parametrize("dataset", [n for n in DATASETS.names() if "download" not in option_names(n)])
def test_download_only_where_it_works(dataset):
    """--download is taken by the datasets that can download (Omniglot); the others refuse it
    in one line instead of ending in "not found"."""
    args = build_parser().parse_args(["eval", "--dataset", dataset, "--download"])
    with pytest.raises(ValueError, match=f"--download does not apply to --dataset {dataset}"):
        data_options(args)


def test_every_command_has_quiet_and_shows_its_defaults():
    """A walk over every command's options: each command takes --quiet, has a description,
    and the help of every option with a default states it (0 and 0.0 included)."""
    parser = build_parser()
    for name, sub in parser.subcommands.items():
        assert "--quiet" in sub._option_string_actions, name  # noqa: SLF001
        assert sub.description, name
        formatter = HelpFormatter(name)
        for action in sub._actions:  # noqa: SLF001 - argparse has no public list
            if (not action.option_strings or action.help == argparse.SUPPRESS
                    or action.default is None or action.default is False or action.default == []
                    or action.default == argparse.SUPPRESS):
                continue
            assert "default" in formatter._get_help_string(action), (name, action.dest)  # noqa: SLF001
        sub.format_help()  # every help text renders


def test_zero_defaults_are_shown(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("weight decay (default: 0.0)", "(default: 0)", "no limit"):
        assert shown in text


def test_train_method_choices_are_episodic():
    action = build_parser().subcommands["train"]._option_string_actions["--method"]  # noqa: SLF001
    assert action.metavar.split("|") == method_names("episodic")
    with pytest.raises(argparse.ArgumentTypeError, match="use fewshot pretrain --method simclr"):
        action.type("simclr")
    with pytest.raises(argparse.ArgumentTypeError, match="choose one of protonet, matching"):
        action.type("nope")


def test_old_flag_names_still_work():
    parser = build_parser()
    args = parser.parse_args(["eval", "--batch-size", "3", "--json", "r.json"])
    assert (args.episodes_per_pass, args.output) == (3, "r.json")
    args = parser.parse_args(["predict", "--checkpoint", "c", "--support", "s", "--query", "q",
                              "--batch-size", "4"])
    assert args.queries_per_pass == 4
    for command in ("eval", "predict"):  # hidden: the help names the new spelling only
        text = parser.subcommands[command].format_help()
        assert "--batch-size" not in text and "--json" not in text and "-per-pass" in text
    assert {parser.parse_args([c, "--checkpoint", "c", "--output", "o"]).split
            for c in ("eval", "plot-embeddings")} == {"test"}


def test_options_lists_a_methods_typed_options(capsys):
    main(["options", "protonet"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {f.name for f in dataclasses.fields(ProtoNetConfig)}
    assert {"distance", "hidden", "scale", "learn_scale", "rotation_weight"} <= set(rows)
    assert "one of euclidean, cosine" in rows["distance"] and "euclidean" in rows["distance"]
    assert ">= 0" in rows["rotation_weight"] and "float" in rows["rotation_weight"]
    assert "between queries and prototypes" in rows["distance"]
    main(["options", "logistic", "--of", "head", "--quiet"])
    assert "> 0" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["options", "nope"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and len(err.splitlines()) == 1 and "protonet" in err
