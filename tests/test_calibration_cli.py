"""Calibration on the command line: train fits the temperature on its validation episodes and
records it in both checkpoints; eval reports the calibration error at it (or at 1 with
--no-temperature) and fits one on given episodes with --fit-temperature; predict uses it."""

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot.cli import main
from fewshot.engine.checkpoint import load_learner
from fewshot.engine.predict import predict

from .conftest import data_args, support_query

TRAIN = ["--way", "2", "--shot", "1", "--query", "2", "--steps", "2", "--val-episodes", "10",
         "--val-way", "4", "--val-query", "4", "--quiet"]
EVAL = ["--way", "2", "--shot", "1", "--query", "2", "--episodes", "6"]


def make_paired_tree(root: Path) -> Path:
    """As :func:`tests.conftest.make_tree` (8 classes x 6 grayscale 20x20 images with a bright
    bar), but classes 2j and 2j+1 share their bar's rows, so a model confuses them: some
    predictions are right, some wrong, and the temperature has a minimum to find."""
    rng = np.random.default_rng(0)
    for c in range(8):
        (root / "data" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 60, (20, 20), dtype=np.uint8)
            img[4 * (c // 2):4 * (c // 2) + 2] = 255
            Image.fromarray(img, "L").save(root / "data" / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny ProtoNet run with validation, trained once for the module, and its last line."""
    tree = make_paired_tree(tmp_path_factory.mktemp("calibration"))
    printed = io.StringIO()
    with redirect_stdout(printed):
        main(["train", *data_args(tree), "--split-ratios", "0.25", "0.5", "0.25", *TRAIN,
              "--out", str(tree / "run")])
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
    learner, spec, ckpt = load_learner(out / "best.pt")
    for off, temperature in ((False, t), (True, 1.0)):
        expected = predict(learner, spec, support, query, pipeline=ckpt["pipeline"],
                           temperature=temperature)[0].probability
        assert probability[off] == pytest.approx(expected, abs=1e-6)
    assert probability[False] != pytest.approx(probability[True], abs=1e-4)


def test_fit_temperature_is_for_the_checkpoints_learner(trained, capsys):
    tree, _ = trained
    with pytest.raises(SystemExit):
        main(["eval", *data_args(tree), *EVAL, "--checkpoint", str(tree / "run" / "best.pt"),
              "--head", "prototype", "--fit-temperature"])
    assert "--fit-temperature fits the temperature of a checkpoint's own learner: leave out " \
           "--head" in capsys.readouterr().err


def test_a_fit_at_an_end_of_the_range_is_not_recorded(tmp_path: Path, tiny_dataset):
    from episodes import FixedEpisodes
    from fewshot.calibration import T_RANGE
    from fewshot.engine.calibrate import calibrate_checkpoint

    from .test_api import checkpoint
    data = tiny_dataset(num_classes=4, per_class=6, size=16)
    path = checkpoint(tmp_path)
    # support and query are the same image: an untrained ProtoNet gets every query right
    episodes = FixedEpisodes.generate(data, 2, 1, 1, 3, seed=0)
    episodes.items[:, :, 1] = episodes.items[:, :, 0]
    fit = calibrate_checkpoint(path, data, episodes)
    assert not fit.recorded and fit.temperature == pytest.approx(T_RANGE[0], rel=1e-3)
    assert load_learner(path)[2]["temperature"] == 1.0 and "no temperature recorded" in str(fit)
