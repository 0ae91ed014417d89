"""benchmarks/label_efficiency_heldout.py: the held-out score by hand on a tiny classifier,
McNemar's exact test by hand, the refusal of a results folder trained with another holdout, and
the committed results (trained without a holdout) rendering as they were."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import label_efficiency as bench  # noqa: E402
import label_efficiency_heldout as heldout  # noqa: E402
from label_efficiency_render import render_pretrained, render_table  # noqa: E402

from episodes import TensorClassDataset  # noqa: E402

COMMITTED = BENCH / "results" / "label-efficiency"


class Tiny(nn.Module):
    """A learner's parts: the backbone flattens the three channels of a 1x1 image, the
    classifier is the identity over three classes (predicts the brightest channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Flatten()
        self.classifier = nn.Linear(3, 3)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.eye(3))
            self.classifier.bias.zero_()


def test_heldout_accuracy_by_hand() -> None:
    pixels = torch.tensor([[200, 10, 10], [10, 200, 10], [10, 10, 200], [200, 10, 10],
                           [10, 200, 10]], dtype=torch.uint8)  # predicted: 0, 1, 2, 0, 1
    held = TensorClassDataset(pixels.view(5, 3, 1, 1), torch.tensor([0, 1, 2, 2, 0]),
                              ["a", "b", "c"])
    cell = heldout.heldout_cell(Tiny(), held, ["a", "b", "c"])
    assert cell["accuracies"] == [1, 1, 1, 0, 0] and cell["images"] == 5
    assert cell["mean"] == pytest.approx(0.6)
    # sample variance of 1, 1, 1, 0, 0: (3 * 0.4^2 + 2 * 0.6^2) / 4 = 0.3
    assert cell["ci95"] == pytest.approx(1.96 * math.sqrt(0.3 / 5))
    with pytest.raises(ValueError, match="same order"):  # the classifier's indices differ
        heldout.heldout_cell(Tiny(), held, ["b", "a", "c"])


def test_mcnemar_and_pairing_by_hand() -> None:
    a = torch.tensor([1, 1, 1, 0, 1, 0])
    b = torch.tensor([0, 0, 0, 0, 1, 0])  # 3 images only a gets right, none only b
    assert heldout.mcnemar_p(a, b) == pytest.approx(2 * 0.5 ** 3)
    assert heldout.mcnemar_p(b, a) == pytest.approx(0.25)
    assert heldout.mcnemar_p(a, a) == 1.0
    # 1 only a, 4 only b: 2 * P(X <= 1), X ~ Bin(5, 1/2) = 2 * 6 / 32
    assert heldout.mcnemar_p(torch.tensor([1, 0, 0, 0, 0]),
                             torch.tensor([0, 1, 1, 1, 1])) == pytest.approx(12 / 32)
    cells = [{"accuracies": x.tolist(), "images": 6} for x in (a, b)]
    test = heldout.heldout_paired(*cells)
    assert test["mean_diff"] == pytest.approx(0.5) and test["images"] == 6
    assert test["mcnemar_p"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same images"):
        heldout.heldout_paired(cells[0], {"accuracies": [1], "images": 1})


def test_a_folder_trained_with_another_holdout_is_refused(tmp_path: Path) -> None:
    new: dict = bench.grid.empty_results("label-efficiency")
    heldout.check_holdout(new, 20, tmp_path)  # nothing trained yet: recorded
    assert new["holdout"] == {"per_class": 20, "seed": heldout.HOLDOUT_SEED}
    heldout.check_holdout(new, 20, tmp_path)  # the same: continued
    old = {**bench.grid.empty_results("label-efficiency"), "models": {"sup@2": {}}}
    heldout.check_holdout(dict(old), 0, tmp_path)  # no record, models: 0 held out
    (tmp_path / "results.json").write_text(json.dumps(old))
    text = (tmp_path / "results.json").read_text()
    with pytest.raises(SystemExit, match=f"^{tmp_path}: its models were trained with 0 images "
                       "per train class held out, this run holds out 20 .*: give another "
                       "--out-dir$"):
        bench.main(["--quick", "--out-dir", str(tmp_path)])
    assert (tmp_path / "results.json").read_text() == text  # nothing written
    with pytest.raises(SystemExit, match=r"trained with 20 images .* held out \(seed 1\), this "
                       "run holds out 5"):
        heldout.check_holdout(new, 5, tmp_path)
    # a folder with checkpoints but no results yet counts as trained
    (tmp_path / "ck" / "checkpoints" / "sup@2").mkdir(parents=True)
    (tmp_path / "ck" / "checkpoints" / "sup@2" / "record.json").write_text("{}")
    with pytest.raises(SystemExit, match="trained with 0 images"):
        heldout.check_holdout(bench.grid.empty_results(), 20, tmp_path / "ck")


def test_levels_after_the_holdout_are_refused_in_one_line() -> None:
    with pytest.raises(SystemExit, match="^--levels 80: the smallest train class has 80 images "
                       "after the 20 held out, and the semi-supervised lines need some left "
                       "unlabelled: give levels of at most 79$"):
        bench.check_levels((1, 80), ("sup", "fixmatch"), 80, 20)
    bench.check_levels(bench.PRESETS["gpu"].levels, bench.PRESETS["gpu"].lines, 80, 20)


def test_the_committed_results_without_a_holdout_render_as_they_were() -> None:
    results = json.loads((COMMITTED / "results.json").read_text())
    assert "holdout" not in results and not any(n.endswith("/heldout") for n in results["cells"])
    lines = ("sup", "ft-rotation", "ft-moco", "ft-context", "ft-colorization", "ft-autoencoder",
             "ft-gan", "ft-triplet", "pseudo-label", "mean-teacher")  # as BENCHMARKS.md renders
    table = render_table(results, "cpu", lines, (2, 5, 10, 40)) + "\n\n" + render_pretrained(
        results, 10) + "\n"
    assert table == (COMMITTED / "table.md").read_text()
