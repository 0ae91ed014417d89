"""benchmarks/self_supervised.py (issue 12): the labelled 10 %, a self-supervised model, the
supervised training from its backbone, the scored cells, paired tests and the rendered tables,
on tiny data in this process."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import self_supervised as bench  # noqa: E402
from ssl_protocols import PRESETS, models  # noqa: E402

from episodes import FixedEpisodes, TensorClassDataset  # noqa: E402

from .conftest import tiny_rgb  # noqa: E402


def tiny(classes: int, seed: int, size: int = 16) -> TensorClassDataset:
    return tiny_rgb(classes, seed, per_class=20, size=size)


def test_labelled_subset() -> None:
    ds = tiny(4, 0)
    sub = bench.labelled_subset(ds, 0.1)
    assert sub.class_sizes().tolist() == [2, 2, 2, 2]
    again = bench.labelled_subset(ds, 0.1)
    assert torch.equal(sub.images, again.images)
    assert models(("rotation", "moco")) == ["sup10", "ssl-rotation", "sup10-rotation", "ssl-moco"]


def test_models_cells_and_tables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = {"train": tiny(4, 0), "val": tiny(5, 1)}
    monkeypatch.setattr(bench, "load_split", lambda split, args: data[split])

    def test_episodes(dataset, n_way, k_shot, q_query, count, name, seed=2017) -> FixedEpisodes:
        return FixedEpisodes.generate(dataset, n_way, k_shot, q_query, count, seed)

    monkeypatch.setattr(bench.common, "test_episodes", test_episodes)
    preset = replace(PRESETS["quick"], image_size=16, ssl_batch=8, steps=2, test_episodes=6,
                     labelled_fraction=0.5)
    args = argparse.Namespace(preset=preset, out_dir=tmp_path, device=torch.device("cpu"),
                              time_left=float("inf"), results={"cells": {}, "models": {},
                                                               "paired": {}},
                              results_path=tmp_path / "results.json", episodes=6,
                              env={"device": "cpu"})
    for key in ("sup10", "ssl-rotation", "sup10-rotation"):
        bench.train_one(key, args)
        rec = json.loads((tmp_path / "checkpoints" / key / "record.json").read_text())
        assert rec["status"] == "done" and rec["steps"] == 2 and rec["seconds_per_epoch"] > 0
        assert rec["sessions"][-1]["peak_rss_gb"] > 0
        args.results["models"][key] = rec
        bench.score(key, data["val"], args)
    sup = torch.load(tmp_path / "checkpoints" / "sup10" / "last.pt", weights_only=True)
    assert sup["spec"]["method"] == "classifier"
    cells = args.results["cells"]
    assert len(cells["sup10/5w1s"]["accuracies"]) == 6
    assert set(args.results["paired"]) == {"ssl-rotation/5w1s", "ssl-rotation/5w5s",
                                           "sup10-rotation/5w1s", "sup10-rotation/5w5s"}
    table = bench.render(args.results, "quick")
    assert "| sup10-rotation |" in table and "| rotation |" in table


def test_peak_memory_is_the_childs_own() -> None:
    """A benchmark's child reports its own peak, not that of the larger process that started it
    (``ru_maxrss`` is carried across ``exec`` on Linux; ``common.peak_rss_gb`` reads VmHWM)."""
    import subprocess

    import common
    if not Path("/proc/self/status").is_file():
        pytest.skip("VmHWM is Linux's")
    big = torch.ones(2**28)  # 1 GiB, touched
    code = "import common; print(common.peak_rss_gb())"
    child = float(subprocess.run([sys.executable, "-c", code], cwd=BENCH, check=True,
                                 capture_output=True, text=True).stdout)
    assert common.peak_rss_gb() > 1.0 > child + 0.3, (common.peak_rss_gb(), child)
    del big
