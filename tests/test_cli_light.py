"""The light front of the command line: ``fewshot --help``, ``--version`` and a mistyped command
are answered without importing torch; the version comes from the package metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fewshot
from episodes.registry import DATASETS, option_names
from fewshot.cli import COMMANDS, build_parser, main
from fewshot.cli.args import data_options
from fewshot.version import library_version

PROBE = """
import sys
from fewshot.cli import main
try:
    main({argv!r})
except SystemExit as e:
    code = e.code
assert 'torch' not in sys.modules, 'torch was imported'
assert 'scipy' not in sys.modules, 'scipy was imported'
print('exit', code)
"""


@pytest.mark.parametrize("argv", [["--help"], [], ["--version"], ["trian"]])
def test_front_imports_no_torch(argv):
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == ("0" if argv in (["--help"], ["--version"]) else "2")


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
    assert fewshot.ProtoNet.__name__ == "ProtoNet"
    assert set(fewshot.__all__) <= set(dir(fewshot))
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
