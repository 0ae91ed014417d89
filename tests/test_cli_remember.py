"""Commands that remember: ``eval``, ``predict`` and ``plot-embeddings`` take the data settings
of a checkpoint's run (``run.json`` beside it), flags given override them; an existing
``--episodes-file`` supplies its own shape; every JSON output says where it came from."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch

from episodes import EpisodeSampler
from episodes.io import file_sha256
from episodes.omniglot import omniglot, vinyals_characters
from fewshot import ModelSpec, TrainConfig, build_learner, train
from fewshot.cli import build_parser, main
from fewshot.cli.dispatch import checkpoint_defaults
from fewshot.engine.runs import run_record, write_json_atomic
from fewshot.version import library_version

from .conftest import data_args, make_tree
from .test_datasets import make_fake_omniglot

SMALL = ["--way", "2", "--shot", "1", "--query", "2", "--episodes", "3"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-step run on the folder dataset, trained with ``--device auto``; the dataset's tree."""
    tree = make_tree(tmp_path_factory.mktemp("remember"))
    run = tree / "run"
    args = [a if a != "cpu" else "auto" for a in data_args(tree)]
    main(["train", *args, "--way", "2", "--shot", "1", "--query", "2", "--steps", "2",
          "--val-episodes", "2", "--val-query", "2", "--out", str(run), "--quiet"])
    return tree, run


def check_provenance(p: dict, dataset: str, split: str, channels: int) -> None:
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert (p["dataset"], p["split"], p["channels"], p["device"]) == (dataset, split, channels,
                                                                      device)
    assert p["fewshot_version"] == library_version()
    assert datetime.fromisoformat(p["date"]).utcoffset().total_seconds() == 0


def test_eval_scores_the_runs_test_split(folder_run, tmp_path: Path, capsys):
    tree, run = folder_run
    record = json.loads((run / "run.json").read_text())
    assert record["args"]["device"] == "auto"  # the flag as given; the device used is below
    check_provenance(record["provenance"], "folder", "train", 1)
    assert record["provenance"]["dataset_settings"]["ratios"] == [0.5, 0.25, 0.25]
    capsys.readouterr()

    out = tmp_path / "eval.json"
    main(["eval", "--checkpoint", str(run / "best.pt"), *SMALL, "--output", str(out)])
    std = capsys.readouterr()
    assert std.out.startswith("folder test: 2-way 1-shot")
    note = [line for line in std.err.splitlines() if line.startswith("data settings from ")]
    assert len(note) == 1 and f"--dataset folder --root {tree / 'data'}" in note[0]
    assert "--split-ratios 0.5 0.25 0.25 --channels 1" in note[0] and "--image-size 16" in note[0]
    p = json.loads(out.read_text())["provenance"]
    check_provenance(p, "folder", "test", 1)
    assert p["checkpoint"] == str(run / "best.pt")
    assert p["checkpoint_sha256"] == file_sha256(run / "best.pt") and p["seed"] == 0
    assert p["dataset_settings"]["root"] == str(tree / "data")

    # a flag given overrides the run's; --quiet says nothing on stderr; --json is --output
    main(["eval", "--checkpoint", str(run / "best.pt"), *SMALL, "--split", "val", "--quiet",
          "--json", str(out)])
    std = capsys.readouterr()
    assert std.out.startswith("folder val:") and std.err == ""
    assert json.loads(out.read_text())["provenance"]["split"] == "val"


def test_episodes_file_supplies_its_shape(folder_run, tmp_path: Path, capsys):
    run, episodes = folder_run[1], str(tmp_path / "eps.pt")
    main(["eval", "--checkpoint", str(run / "best.pt"), *SMALL, "--episodes-file", episodes])
    capsys.readouterr()
    main(["eval", "--checkpoint", str(run / "best.pt"), "--episodes-file", episodes, "--quiet"])
    assert "2-way 1-shot: " in capsys.readouterr().out  # not the default 5-way
    with pytest.raises(SystemExit) as info:
        main(["eval", "--checkpoint", str(run / "best.pt"), "--episodes-file", episodes,
              "--query", "5", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and len(err.splitlines()) == 1
    assert "--query 5 and --episodes-file" in err and "holds 2" in err


def test_omniglot_run(tmp_path: Path, capsys):
    """A run on a (fake) Omniglot: eval with no data flags reads Omniglot from the run's root,
    and the result records its true channel count (1, whatever --channels said)."""
    root = tmp_path / "omni"
    make_fake_omniglot(root / "omniglot-py", vinyals_characters("val"))
    ds = omniglot(root, "val", cache_dir=tmp_path / "cache")
    run = tmp_path / "run"
    spec = ModelSpec("protonet", "conv4", 1, 28)
    train(build_learner(spec), spec, EpisodeSampler(ds, 3, 1, 2, seed=0),
          TrainConfig(steps=1, checkpoint_dir=str(run), progress=False))
    write_json_atomic(run_record({"dataset": "omniglot", "root": str(root), "channels": 3},
                                 spec.to_dict()), run / "run.json")
    out = tmp_path / "eval.json"
    main(["eval", "--checkpoint", str(run / "last.pt"), "--split", "val", *SMALL, "--output",
          str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    std = capsys.readouterr()
    assert std.out.startswith("omniglot val: 2-way")
    assert f"--dataset omniglot --root {root}" in std.err and "--channels" not in std.err
    check_provenance(json.loads(out.read_text())["provenance"], "omniglot", "val", 1)


def parsed(tmp_path: Path, record_args: dict, argv: list[str]):
    """The arguments ``argv`` parse to beside a run whose ``run.json`` records
    ``record_args``, and the note printed."""
    (tmp_path / "run").mkdir(exist_ok=True)
    write_json_atomic({"command": "train", "args": record_args}, tmp_path / "run" / "run.json")
    argv = [argv[0], "--checkpoint", str(tmp_path / "run" / "best.pt"), *argv[1:]]
    parser = build_parser()
    note = checkpoint_defaults(parser, argv)
    return parser.parse_args(argv), note


def test_embedded_run(tmp_path: Path):
    args, note = parsed(tmp_path, {"dataset": "embedded", "image_size": 32, "channels": 3},
                        ["eval"])
    assert (args.dataset, args.image_size) == ("embedded", 32) and note.endswith("--image-size 32")
    demo = {"seconds": 1, "episodes": 2, "out": "x", "device": "auto", "precision": "auto"}
    args, note = parsed(tmp_path, demo, ["eval"])
    assert note is None and args.dataset == "embedded"


@pytest.mark.parametrize("command", ["eval", "plot-embeddings", "predict"])
def test_every_command_on_a_checkpoint(tmp_path: Path, command: str):
    record = {"dataset": "folder", "root": "data", "split_dir": "splits", "channels": 1,
              "no_convert": True, "cache_dir": "elsewhere", "device": "cuda", "decoder": "cuda"}
    more = {"eval": [], "plot-embeddings": ["--output", "x.png"],
            "predict": ["--support", "s", "--query", "q"]}[command]
    args, note = parsed(tmp_path, record, [command, *more])
    assert args.no_convert is True
    assert args.device == "auto" and getattr(args, "cache_dir", None) is None  # the machine's
    if command != "predict":
        assert (args.dataset, args.root, args.split_dir, args.channels) == ("folder", "data",
                                                                            "splits", 1)
        assert "--dataset folder --root data --split-dir splits --channels 1" in note
    # another --dataset given: the run's settings describe other data, none is taken
    if command != "predict":
        args, note = parsed(tmp_path, record, [command, *more, "--dataset", "embedded"])
        assert note is None and args.root is None and args.channels == 3


def test_a_bad_recorded_value_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "run").mkdir()
    write_json_atomic({"args": {"dataset": "nope"}}, tmp_path / "run" / "run.json")
    with pytest.raises(SystemExit) as info:
        main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and len(err.splitlines()) == 1 and "its --dataset 'nope'" in err


def test_an_error_in_a_taken_setting_says_where_it_came_from(tmp_path: Path, capsys):
    (tmp_path / "run").mkdir()
    write_json_atomic({"args": {"dataset": "folder", "root": str(tmp_path / "moved"),
                                "split_ratios": [0.5, 0.25, 0.25]}}, tmp_path / "run" / "run.json")
    with pytest.raises(SystemExit) as info:
        main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pt")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and len(err.splitlines()) == 1
    assert "moved does not exist" in err and f"data settings from {tmp_path / 'run'}" in err
