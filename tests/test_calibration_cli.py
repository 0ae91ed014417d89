"""Calibration on the command line: train fits the temperature on its validation episodes and
records it in both checkpoints; eval reports the calibration error at it (or at 1 with
--no-temperature) and fits one on given episodes with --fit-temperature; predict uses it."""

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from fewshot.cli import main
from fewshot.engine.checkpoint import load_learner

from .conftest import data_args, make_tree, support_query

TRAIN = ["--way", "2", "--shot", "1", "--query", "2", "--steps", "2", "--val-episodes", "4",
         "--val-query", "2", "--quiet"]
EVAL = ["--way", "2", "--shot", "1", "--query", "2", "--episodes", "6"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny ProtoNet run with validation, trained once for the module, and its last line."""
    tree = make_tree(tmp_path_factory.mktemp("calibration"))
    printed = io.StringIO()
    with redirect_stdout(printed):
        main(["train", *data_args(tree), *TRAIN, "--out", str(tree / "run")])
    return tree, printed.getvalue().strip().splitlines()[-1]


def test_train_records_the_fitted_temperature(trained):
    tree, line = trained
    assert "temperature T=" in line and "on the val episodes, recorded in the checkpoints" in line
    temperatures = [load_learner(tree / "run" / name)[2]["temperature"]
                    for name in ("best.pt", "last.pt")]
    assert all(t > 0 for t in temperatures) and temperatures[0] != 1.0


def test_eval_reports_the_calibration_error_and_fits_a_temperature(trained, capsys):
    tree, _ = trained
    out = tree / "run"
    t = load_learner(out / "best.pt")[2]["temperature"]
    main(["eval", *data_args(tree), *EVAL, "--checkpoint", str(out / "best.pt"),
          "--json", str(tree / "at_t.json")])
    assert "ECE" in capsys.readouterr().out
    at_t = json.loads((tree / "at_t.json").read_text())
    assert at_t["temperature"] == pytest.approx(t) and 0 <= at_t["ece"] <= 1
    assert at_t["ece_bins"] == 15
    main(["eval", *data_args(tree), *EVAL, "--checkpoint", str(out / "best.pt"),
          "--no-temperature", "--json", str(tree / "at_1.json")])
    at_1 = json.loads((tree / "at_1.json").read_text())
    assert at_1["temperature"] == 1.0 and at_1["accuracies"] == at_t["accuracies"]

    main(["eval", *data_args(tree), *EVAL, "--checkpoint", str(out / "best.pt"),
          "--no-temperature", "--fit-temperature", "--json", str(tree / "fit.json")])
    printed = capsys.readouterr().out
    fit = json.loads((tree / "fit.json").read_text())
    assert fit["before_fit"] == {"temperature": 1.0, "ece": pytest.approx(at_1["ece"])}
    assert fit["accuracies"] == at_1["accuracies"] and fit["ece"] <= at_1["ece"] + 1e-9
    assert f"-> {100 * fit['ece']:.2f} % at T={fit['temperature']:.3g} fitted on these" in printed


def test_predict_uses_the_temperature_unless_told_not_to(trained, capsys):
    tree, _ = trained
    out = tree / "run"
    t = load_learner(out / "best.pt")[2]["temperature"]
    support, query = support_query(tree)
    probability = {}
    for flags in ([], ["--no-temperature"]):
        main(["predict", "--checkpoint", str(out / "best.pt"), "--support", str(support),
              "--query", str(query), "--format", "json", "--device", "cpu", *flags])
        probability[bool(flags)] = json.loads(capsys.readouterr().out)[0]["probability"]
    # two classes: p = sigmoid(d / T) for the logit difference d of the prediction
    d = torch.logit(torch.tensor(probability[True], dtype=torch.float64))
    assert probability[False] == pytest.approx(float(torch.sigmoid(d / t)), abs=1e-5)


def test_fit_temperature_is_for_the_checkpoints_learner(trained, capsys):
    tree, _ = trained
    with pytest.raises(SystemExit):
        main(["eval", *data_args(tree), *EVAL, "--checkpoint", str(tree / "run" / "best.pt"),
              "--head", "prototype", "--fit-temperature"])
    assert "--fit-temperature fits the temperature of a checkpoint's own learner: leave out " \
           "--head" in capsys.readouterr().err
