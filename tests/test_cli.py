"""The command line end to end on a tiny folder dataset: train, resume, eval, predict, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fewshot.cli import main

from .conftest import data_args


def test_train_eval_predict(tree: Path, capsys):
    run = tree / "run"
    main(["train", *data_args(tree), "--way", "2", "--shot", "1", "--query", "2", "--steps", "6",
          "--val-episodes", "5", "--val-query", "2", "--val-every", "3", "--checkpoint-every", "3",
          "--out", str(run), "--quiet"])
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    assert "trained 6 steps" in capsys.readouterr().out
    main(["train", *data_args(tree), "--way", "2", "--shot", "1", "--query", "2", "--steps", "8",
          "--val-episodes", "5", "--val-query", "2", "--out", str(run), "--resume", "--quiet"])
    assert "trained 8 steps" in capsys.readouterr().out

    out_json = tree / "eval.json"
    main(["eval", *data_args(tree), "--checkpoint", str(run / "best.pt"), "--way", "2", "--shot",
          "1", "--query", "3", "--episodes", "10", "--episodes-file", str(tree / "eps.pt"),
          "--json", str(out_json)])
    res = json.loads(out_json.read_text())
    assert res["episodes"] == 10 and len(res["accuracies"]) == 10 and 0 <= res["mean"] <= 1
    assert (tree / "eps.pt").is_file()

    support, query = tree / "support", tree / "query"
    query.mkdir()
    for c in (0, 5):
        shutil.copytree(tree / "data" / f"class{c}", support / f"class{c}")
        shutil.copy(tree / "data" / f"class{c}" / "0.png", query / f"q{c}.png")
    main(["predict", "--checkpoint", str(run / "best.pt"), "--support", str(support), "--query",
          str(query), "--output", str(tree / "pred.tsv"), "--device", "cpu"])
    rows = [r.split("\t") for r in (tree / "pred.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 2 and {r[1] for r in rows} <= {"class0", "class5"}
    # the query images are support images, so a prototype classifier labels them right
    assert [r[1] for r in sorted(rows)] == ["class0", "class5"]


def help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_explains_every_option(capsys):
    out = help_text(capsys, "train")
    for flag in ("--way", "--shot", "--resume", "--amp", "--episodes-per-step", "--split-dir",
                 "--overwrite", "--config"):
        assert flag in out
    flat = " ".join(out.split())
    for default in ("(default: 2000)", "(default: 0.001)", "(default: protonet)", "(default: 5)"):
        assert default in flat
    for command in ((), ("demo",), ("eval",), ("predict",)):
        text = help_text(capsys, *command)
        assert "``" not in text and ":func:" not in text and "default: None" not in text


def test_maml_with_per_step_batchnorm_trains_and_evaluates(tree: Path, capsys):
    run = tree / "maml"
    main(["train", *data_args(tree), "--method", "maml", "--option", "bn=per_step", "--option",
          "hidden=4", "--option", "eval_inner_steps=2", "--way", "2", "--shot", "1", "--query", "2",
          "--steps", "2", "--val-episodes", "3", "--val-query", "2", "--out", str(run), "--quiet"])
    assert "trained 2 steps" in capsys.readouterr().out
    out_json = tree / "maml.json"
    main(["eval", *data_args(tree), "--checkpoint", str(run / "last.pt"), "--way", "2", "--shot",
          "1", "--query", "2", "--episodes", "4", "--json", str(out_json)])
    assert len(json.loads(out_json.read_text())["accuracies"]) == 4
    from fewshot.engine.checkpoint import load_learner

    learner = load_learner(run / "last.pt")[0]
    assert learner.bn_stats is not None and learner.bn_stats.sets == 2  # inner_steps=1: sets 0, 1
