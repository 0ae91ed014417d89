"""The bad-input table, generated from the parser rather than listed by hand: every number out of
its flag's range, every path flag given a link to nothing or the wrong kind of file, and every
pair of options that contradict each other or would be ignored. Each ends the command with one
line naming the flag, a non-zero status and nothing written."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from fewshot.cli import build_parser, main

from .conftest import data_args, make_tree

TRAIN = ["--way", "2", "--shot", "1", "--query", "2", "--steps", "2", "--val-episodes", "0",
         "--quiet"]


def bounded_flags() -> list[tuple[str, str, tuple]]:
    """(command, flag, bounds) for every flag whose type is a bounded number."""
    parser = build_parser()
    out = []
    for command, sub in parser.subcommands.items():
        for action in sub._actions:  # noqa: SLF001 - argparse has no public list
            bounds = getattr(action.type, "bounds", None)
            if bounds and action.option_strings:
                out.append((command, action.option_strings[0], bounds))
    return out


def out_of_range(bounds: tuple) -> list[str]:
    kind, low, strict, high = bounds
    values = ["nan", "inf", "-inf", "x"]
    values.append(str(low) if strict else str(kind(low - 1) if kind is int else low - 0.5))
    if high is not None:
        values.append(str(kind(high + 1)))
    return values


NUMBERS = [(c, f, v) for c, f, b in bounded_flags() for v in out_of_range(b)]


def test_every_bounded_flag_is_covered():
    flags = {f for _, f, _ in NUMBERS}
    assert {"--lr", "--steps", "--way", "--image-size", "--seconds", "--time-limit"} <= flags


@pytest.mark.parametrize("command, flag, value", NUMBERS,
                         ids=[f"{c} {f} {v}" for c, f, v in NUMBERS])
def test_numbers_out_of_range(capsys, command, flag, value):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, f"{flag}={value}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and flag in err, err
    assert math.isnan(float("nan"))  # the table really contains nan (guards the generator)


def dangling(tree: Path) -> str:
    link = tree / "dangling"
    if not link.is_symlink():
        link.symlink_to(tree / "nowhere")
    return str(link)


def a_file(tree: Path) -> str:
    (tree / "afile").write_text("x")
    return str(tree / "afile")


def a_folder(tree: Path) -> str:
    (tree / "afolder").mkdir(exist_ok=True)
    return str(tree / "afolder")


def trained(tree: Path) -> str:
    if not (tree / "run" / "last.pt").is_file():
        main(["train", *data_args(tree), *TRAIN, "--out", str(tree / "run")])
    return str(tree / "run" / "last.pt")


def support(tree: Path) -> list[str]:
    return ["--support", str(tree / "data"), "--query", str(tree / "data" / "class0")]


# command line -> flag, for each kind of path: (what, builds the bad path, the expected words)
PATHS: list[tuple[str, Callable[[Path, str], list[str]], str]] = [
    ("--out", lambda t, p: ["train", *data_args(t), *TRAIN, "--out", p], "folder"),
    ("--cache-dir", lambda t, p: ["train", *data_args(t)[:-4], "--cache-dir", p, "--device",
                                  "cpu", *TRAIN, "--out", str(t / "c")], "folder"),
    ("--root", lambda t, p: ["train", "--dataset", "folder", "--root", p, "--split-ratios", "1",
                             "1", "1", *TRAIN, "--out", str(t / "r")], "folder"),
    ("--init", lambda t, p: ["train", *data_args(t), *TRAIN, "--init", p, "--out",
                             str(t / "i")], ""),
    ("--config", lambda t, p: ["train", "--config", p, "--out", str(t / "cfg")], ""),
    ("--checkpoint", lambda t, p: ["eval", *data_args(t), "--checkpoint", p], ""),
    ("--output", lambda t, p: ["eval", *data_args(t), "--checkpoint", trained(t), "--way", "2",
                               "--query", "2", "--episodes", "2", "--output", p], "file"),
    ("--output", lambda t, p: ["plot-embeddings", *data_args(t), "--checkpoint", trained(t),
                               "--output", p], "file"),
    ("--episodes-file", lambda t, p: ["eval", *data_args(t), "--checkpoint", trained(t), "--way",
                                      "2", "--query", "2", "--episodes", "2",
                                      "--episodes-file", p], ""),
    ("--output", lambda t, p: ["predict", "--checkpoint", trained(t), *support(t), "--output",
                               p], "file"),
    ("--support", lambda t, p: ["predict", "--checkpoint", trained(t), "--support", p,
                                "--query", str(t / "data")], "folder"),
    ("--extra-unlabelled", lambda t, p: ["pretrain", *data_args(t), "--method", "fixmatch",
                                         "--labels-per-class", "2", "--steps", "1",
                                         "--val-episodes", "0", "--extra-unlabelled", p,
                                         "--out", str(t / "u")], "folder"),
    ("--output", lambda t, p: ["plot", str(Path(trained(t)).parent), "--output", p], "file"),
]
WRONG_KIND = {"folder": a_file, "file": a_folder, "": a_folder}
CASES = [(flag, argv, make, kind) for flag, argv, kind in PATHS
         for make in (dangling, WRONG_KIND[kind])]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = make_tree(tmp_path_factory.mktemp("table"))
    trained(tree)
    return tree


@pytest.mark.parametrize("flag, argv, make, kind", CASES,
                         ids=[f"{c[0]} {c[2].__name__}" for c in CASES])
def test_paths_of_the_wrong_kind(shared, capsys, flag, argv, make, kind):
    path = make(shared)
    before = sorted(p.name for p in shared.iterdir())
    with pytest.raises(SystemExit) as info:
        main(argv(shared, path))
    err = capsys.readouterr().err.strip()
    assert info.value.code not in (0, None) and len(err.splitlines()) == 1, err
    assert flag in err and "Traceback" not in err, err
    assert sorted(p.name for p in shared.iterdir()) == before  # nothing written


CONFLICTS = [
    (["--resume", "--overwrite"], "--resume continues the run in --out and --overwrite replaces it"),
    (["--split-dir", "x"], "--split-dir and --split-ratios both split the classes"),
    (["--val-way", "3"], "--val-way/--val-shot shape validation episodes, and --val-episodes 0"),
    (["--crop-boxes"], "--crop-boxes does not apply to --dataset folder"),
    (["--csv-dir", "x"], "--csv-dir does not apply to --dataset folder"),
    (["--download"], "--download does not apply to --dataset folder"),
    (["--augment-option", "rotate=5"], "--augment-option needs --augment standard"),
]


@pytest.mark.parametrize("extra, message", CONFLICTS, ids=[" ".join(c[0]) for c in CONFLICTS])
def test_options_that_contradict_or_would_be_ignored(shared, capsys, extra, message):
    with pytest.raises(SystemExit) as info:
        main(["train", *data_args(shared), *TRAIN, *extra, "--out", str(shared / "conflict")])
    err = capsys.readouterr().err.strip()
    assert info.value.code not in (0, None) and len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (shared / "conflict").exists()


def test_eval_options_that_contradict(shared, capsys):
    for extra, message in ((["--head-option", "k=3"], "--head-option needs --head"),
                           (["--weights", "w.pt"], "--backbone/--weights/--normalize are for "
                            "scoring a weights file without --checkpoint")):
        with pytest.raises(SystemExit):
            main(["eval", *data_args(shared), "--checkpoint", trained(shared), *extra])
        assert message in capsys.readouterr().err


def test_the_generated_tables_are_not_empty():
    assert len(NUMBERS) > 60 and len(CASES) == 2 * len(PATHS)
    assert isinstance(build_parser(), argparse.ArgumentParser)
