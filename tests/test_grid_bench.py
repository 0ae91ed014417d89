"""benchmarks/grid.py, the grid the reproduction, transfer and self-supervised benchmarks share:
the results JSON and its mode, the budget, time to accuracy, paired tests and splicing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import grid  # noqa: E402
import grid_render  # noqa: E402


def test_results_json_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    assert grid.load_results(path) is None and grid.digest(path) == {}
    results = grid.check_mode(grid.empty_results(), "full protocol", path)
    results["cells"]["a"] = {"mean": 0.5, "accuracies": [0.5, 0.5]}
    grid.record_call(results, {"device": "cpu"}, 12.34, peak_rss_gb=1.0)
    grid.save_results(results, path)
    again = grid.load_results(path)
    assert again == results and again["calls"] == [{"device": "cpu", "wall_seconds": 12.3,
                                                     "peak_rss_gb": 1.0}]
    assert grid.digest(path)["cells"] == {"a": {"mean": 0.5}}
    with pytest.raises(SystemExit, match="another kind of run"):
        grid.check_mode(again, "smoke (--quick)", path)


def test_budget() -> None:
    assert grid.Budget.of_minutes(None).left() == float("inf")
    assert grid.Budget.of_minutes(0).left() == float("inf")  # 0: no limit, as before
    b = grid.Budget.of_minutes(1, reserve=30)
    assert 29 < b.left() <= 30 and b.wall() >= 0
    assert grid.Budget(time.monotonic() - 1).left() < 0


def test_time_to_accuracy_cap_and_published() -> None:
    curve = grid.Curve(every=5, episodes=10, cap=30, until_published=True)
    calls = []

    def score(n: int) -> dict[str, float]:
        calls.append(n)
        return {"s": 0.5 if len(calls) == 1 else 0.99}

    rec = {"seconds": 60.0, "steps": 10, "status": "training"}
    grid.time_to_accuracy(rec, "m", curve, {"s": 98.0}, score)
    assert rec["curve"][0] == {"train_minutes": 1.0, "steps": 10, "accuracy": {"s": 0.5},
                               "episodes": 10} and rec["status"] == "training"
    rec.update(seconds=120.0, steps=20)  # 1 minute later: no point due
    grid.time_to_accuracy(rec, "m", curve, {"s": 98.0}, score)
    assert len(rec["curve"]) == 1
    rec.update(seconds=400.0, steps=60)
    grid.time_to_accuracy(rec, "m", curve, {"s": 98.0}, score)
    assert rec["status"] == "done" and rec["reached_published"] == pytest.approx(400 / 60)
    assert rec["stopped"].startswith("published accuracy reached after 7 min")
    capped = {"seconds": 1800.0, "steps": 99, "status": "training"}
    grid.time_to_accuracy(capped, "m", grid.Curve(cap=30), {"s": 98.0}, score)
    assert capped["status"] == "done" and capped["stopped"].startswith("time cap: 30 min")
    assert not grid.reopened(capped, grid.Curve(cap=30))
    assert grid.reopened(capped, grid.Curve(cap=60)) and capped["status"] == "training"


def test_paired_tests() -> None:
    a = {"accuracies": [1.0, 0.8, 0.6, 0.9], "episodes": 4}
    b = {"accuracies": [0.9, 0.7, 0.6, 0.8], "episodes": 4}
    c = {"accuracies": [0.5, 0.5], "episodes": 2}
    assert grid.paired(a, b)["mean_diff"] == pytest.approx(0.075)
    prefix = grid.paired(a, c, common_prefix=True)
    assert prefix["episodes"] == 2 and prefix["mean_diff"] == pytest.approx(0.4)
    assert set(grid.pairs_within({"y": b, "x": a, "z": c})) == {"x - y"}  # z: other episodes


def test_render_helpers_and_splice(tmp_path: Path) -> None:
    assert grid_render.duration(599) == "599 s" and grid_render.duration(1800) == "30 min"
    assert grid_render.duration(None) == "-"
    assert grid_render.mean_ci({"mean": 0.97123, "ci95": 0.0034}) == "97.12 +- 0.34"
    curve = [{"train_minutes": 0.5, "steps": 10, "episodes": 20, "accuracy": {"a": 0.9}}]
    assert grid_render.curve_text(curve, "a") == "0.5 -> 90.00"
    assert grid_render.curve_table(curve, ["a", "b"])[2] == "| 0.5 | 10 | 90.00 | - | 20 |"
    md = tmp_path / "M.md"
    md.write_text("x\n<!-- one:start -->\nold\n<!-- one:end -->\ny\n")
    assert grid_render.splice_blocks(md, {"one": "new", "two": "none"}) == ["one"]
    assert md.read_text() == "x\n<!-- one:start -->\nnew\n<!-- one:end -->\ny\n"
    md.write_text("<!-- one:end -->\n<!-- one:start -->\n")
    with pytest.raises(SystemExit, match="once each and in that order"):
        grid_render.splice_blocks(md, {"one": "new"})
