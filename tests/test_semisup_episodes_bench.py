"""benchmarks/semisup_episodes.py (Ren et al. 2018's table through the command line): the models
and cells of a setting, the table's paired differences, the refusal of a folder of another
protocol, and (slow) a whole quick run."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import semisup_episodes as bench  # noqa: E402
from semisup_episodes_protocols import ROWS, SETTINGS, cell_name, models  # noqa: E402


def test_every_refinement_is_trained_with_and_without_distractors_and_protonet_once():
    keys = models(SETTINGS["omniglot"])
    assert keys[0] == ("protonet-1s", "protonet", 1, None)
    assert len(keys) == 7 and len({k for k, *_ in keys}) == 7
    for method in ("soft-kmeans", "distractor", "masked"):
        assert {d for _, m, _, d in keys if m == method} == {0, 5}
    mini = models(SETTINGS["mini"])
    assert {shot for _, _, shot, _ in mini} == {1, 5} and len(mini) == 14


def test_the_cpu_reduction_of_mini_changes_only_image_size_and_training_length():
    full, cpu = SETTINGS["mini"], SETTINGS["mini-cpu"]
    assert (cpu.image_size, cpu.steps, cpu.decay) == (42, 2_000, 1_000)
    assert replace(cpu, image_size=full.image_size, steps=full.steps, decay=full.decay) == full
    assert models(cpu) == models(full)


def test_the_table_pairs_every_row_with_the_supervised_row_on_the_same_episodes():
    g = torch.Generator().manual_seed(0)
    s = SETTINGS["quick"]
    cells = {}
    for row, *_ in ROWS:
        for d in (0, 5):
            acc = torch.rand(30, generator=g)
            cells[cell_name(row, 1, d)] = {"mean": acc.mean().item(), "ci95": 0.01,
                                           "episodes": 30, "accuracies": acc.tolist()}
    results = {"cells": cells, "models": {}, "paired": {}}
    table = bench.render(s, results, "quick")
    for row, *_ in ROWS[1:]:
        for d in (0, 5):
            diff = (torch.tensor(cells[cell_name(row, 1, d)]["accuracies"])
                    - torch.tensor(cells[cell_name("protonet", 1, d)]["accuracies"])).mean()
            assert f"({100 * diff.item():+.2f} +- " in table
    supervised = next(line for line in table.splitlines() if line.startswith("| Supervised"))
    assert not re.search(r"\(\S+ \+- ", supervised)  # the baseline has no difference to itself


def test_a_folder_of_another_protocol_is_refused(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({
        "mode": "semisup-episodes", "cells": {}, "models": {}, "paired": {},
        "protocol": {"setting": "quick", "steps": 4, "decay": 2}}))
    with pytest.raises(SystemExit, match="holds a run of"):
        bench.main(["--quick", "--steps", "8", "--out-dir", str(tmp_path)])


@pytest.mark.slow
def test_a_quick_run_scores_every_row_in_both_conditions(tmp_path):
    bench.main(["--quick", "--out-dir", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["models"]) == 7
    for row, *_ in ROWS:
        for d in (0, 5):
            assert results["cells"][cell_name(row, 1, d)]["episodes"] == 20
    eps = torch.load(tmp_path / "episodes-1s-d5.pt", weights_only=True)
    assert eps is not None


def test_every_published_figure_names_a_row_and_condition_of_its_setting():
    rows = {row for row, *_ in ROWS}
    for name, s in SETTINGS.items():
        for row, shot, d, pct in s.published:
            assert row in rows and shot in s.shots and d in (0, s.distractors), name
            assert 0 < pct < 100
        assert bool(s.published) == bool(s.published_source), name
