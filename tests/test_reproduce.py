"""benchmarks/reproduce.py (issue 10's harness): --quick on a few cells with tiny data, the results
JSON, the rendered table and its splicing into a Markdown file, resuming a cell whose budget ran out
from a packed results folder; the full --quick (every cell on the real data) is marked slow and
skips without the shared data (see benchmarks/common.py)."""

from __future__ import annotations

import json
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import reproduce  # noqa: E402
import reproduce_render  # noqa: E402

from episodes import FixedEpisodes, ImagePipeline, TensorClassDataset  # noqa: E402

SHARED_DATA = reproduce.common.SHARED
CELLS = "protonet/omniglot-5w1s,protonet/omniglot-20w1s,maml_fo/mini-5w1s"


def tiny(classes: int, channels: int, size: int, seed: int) -> TensorClassDataset:
    """``classes`` x 20 random uint8 images (20: enough for 5 shots and 15 queries)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (classes * 20, channels, size, size), generator=g,
                           dtype=torch.uint8)
    pipeline = ImagePipeline(channels, size, "area" if channels == 1 else "bilinear",
                             invert=channels == 1)
    return TensorClassDataset(images, torch.arange(classes).repeat_interleave(20),
                              [f"c{seed}-{i}" for i in range(classes)], pipeline)


@pytest.fixture
def tiny_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Tiny Omniglot-shaped (60/20/20 classes, grayscale) and mini-ImageNet-shaped (5 + 5
    classes, RGB) splits, all 16x16 for speed (the harness takes the size from the data; 16 is
    the least Conv-4's four poolings take); fixed test episodes saved in ``tmp_path`` instead of
    benchmarks/episodes."""
    sizes = {("omniglot", "train"): 60, ("omniglot", "val"): 20, ("omniglot", "test"): 20,
             ("mini", "train"): 5, ("mini", "val"): 5}
    data = {key: tiny(n, 1 if key[0] == "omniglot" else 3, 16, i)
            for i, (key, n) in enumerate(sizes.items())}
    monkeypatch.setattr(reproduce, "load_split", lambda ds, split, args: data[ds, split])

    def test_episodes(dataset, n_way, k_shot, q_query, count, name, seed=2017) -> FixedEpisodes:
        path = tmp_path / "episodes" / f"{name}-{n_way}w{k_shot}s{q_query}q-{count}.pt"
        if path.is_file():
            return FixedEpisodes.load(path)
        episodes = FixedEpisodes.generate(dataset, n_way, k_shot, q_query, count, seed)
        path.parent.mkdir(exist_ok=True)
        episodes.save(path)
        return episodes

    monkeypatch.setattr(reproduce.common, "test_episodes", test_episodes)
    return tmp_path


def test_quick_cells_json_and_table(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    out = tiny_data / "out"
    reproduce.main(["--quick", "--cells", CELLS, "--out-dir", str(out), "--test-episodes", "3"])
    results = json.loads((out / "results.json").read_text())
    assert set(results["cells"]) == set(CELLS.split(","))
    for cell in results["cells"].values():
        assert cell["status"] == "done" and cell["mode"] == "smoke (--quick)"
        assert len(cell["accuracies"]) == cell["episodes"] == 3 and cell["query"] == 15
        assert 0 <= cell["mean"] <= 1 and cell["train_steps"] == reproduce.QUICK["steps"]
    for model in results["models"].values():  # two train() calls, the second resumed
        assert [(s["steps_from"], s["train_calls"]) for s in model["sessions"]] == [(0, 2)]
    assert results["models"]["protonet-omniglot-60w1s5q-b1"]["episodes"] == "60w1s5q x 1"
    assert results["models"]["maml_fo-mini-5w1s15q-b4"]["episodes"] == "5w1s5q x 1"
    # ProtoNet 5- and 20-way 1-shot are one 60-way model, trained once and scored twice
    assert results["cells"]["protonet/omniglot-5w1s"]["model"] == \
        results["cells"]["protonet/omniglot-20w1s"]["model"]
    assert len(results["models"]) == 2 and len(results["calls"]) == 1
    capsys.readouterr()
    reproduce.main(["--render", "--out-dir", str(out)])
    table = capsys.readouterr().out
    assert "| protonet/omniglot-5w1s | 98.80 |" in table  # the published number beside it
    assert table.count("(SMOKE, not a result)") == 3 and "SMOKE, NOT A RESULT" in table
    assert table.count("not yet run") == 30 - 3
    assert "49.42 +- 0.78 †" in table  # a cell not run still shows its published number
    with pytest.raises(SystemExit, match="another kind of run"):  # never mixed with full ones
        reproduce.main(["--cells", CELLS, "--out-dir", str(out)])


def test_cell_scored_before_its_model_trained_on(tiny_data: Path) -> None:
    """A cell scored on an earlier state of a model that another cell then trained further (one
    60-way ProtoNet serves 5- and 20-way) is scored again; a current cell is left as it is."""
    out = tiny_data / "out"
    args = ["--quick", "--cells", "protonet/omniglot-*1s", "--out-dir", str(out),
            "--test-episodes", "2"]
    reproduce.main(args)
    path = out / "results.json"
    results = json.loads(path.read_text())
    steps = results["models"]["protonet-omniglot-60w1s5q-b1"]["steps"]
    results["cells"]["protonet/omniglot-20w1s"].update(train_steps=steps - 1, mean=-1.0)
    results["cells"]["protonet/omniglot-5w1s"].update(mean=-2.0)
    path.write_text(json.dumps(results))
    reproduce.main(args)
    cells = json.loads(path.read_text())["cells"]
    assert cells["protonet/omniglot-20w1s"]["train_steps"] == steps
    assert 0 <= cells["protonet/omniglot-20w1s"]["mean"] <= 1  # scored again
    assert cells["protonet/omniglot-5w1s"]["mean"] == -2.0  # current: not scored again


def test_resume_after_budget(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call whose budget runs out mid-training leaves the cell to the next call, which
    continues the same model from its checkpoint (carried in the --pack tar, as between device
    calls) and scores it."""
    out, cell, key = tiny_data / "out", "maml/omniglot-5w1s", "maml-omniglot-5w1s1q-b32"
    args = ["--quick", "--cells", cell, "--test-episodes", "2", "--steps", "12"]
    tar = tiny_data / "device-out" / "reproduce.tar"
    train = reproduce.train

    def train_then_wait(*a, **kw):  # the budget (1.2 s) runs out after the first train() call
        res = train(*a, **kw)
        time.sleep(1.2)
        return res

    monkeypatch.setattr(reproduce, "train", train_then_wait)
    reproduce.main([*args, "--out-dir", str(out), "--budget-minutes", "0.02", "--pack", str(tar)])
    monkeypatch.setattr(reproduce, "train", train)
    results = json.loads((out / "results.json").read_text())
    model = results["models"][key]
    assert cell not in results["cells"] and model["status"] == "training"
    first = model["steps"]
    assert 0 < first <= 6  # the first of the two --quick train() calls, or part of it
    with tarfile.open(tar) as t:  # the next call starts from the tar alone
        t.extractall(tiny_data / "next", filter="data")
    out = tiny_data / "next" / out.name
    assert (out / "checkpoints" / key / "last.pt").is_file()
    reproduce.main([*args, "--out-dir", str(out)])
    results = json.loads((out / "results.json").read_text())
    model = results["models"][key]
    assert results["cells"][cell]["status"] == "done" and model["steps"] == 12
    assert [s["steps_from"] for s in model["sessions"]] == [0, first]
    assert len(results["calls"]) == 2


def test_missing_checkpoint_restarts(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    """A model whose checkpoint did not come back (too large to carry) trains again from 0."""
    out, cell, key = tiny_data / "out", "matching/omniglot-5w1s", "matching-omniglot-5w1s15q-b1"
    args = ["--quick", "--cells", cell, "--out-dir", str(out), "--test-episodes", "2"]
    reproduce.main([*args, "--steps", "3", "--budget-minutes", "0"])  # no time: nothing trained
    reproduce.main([*args, "--steps", "1"])
    (out / "checkpoints" / key / "last.pt").unlink()
    results = json.loads((out / "results.json").read_text())
    del results["cells"][cell]  # as if the budget had run out before scoring
    (out / "results.json").write_text(json.dumps(results))
    reproduce.main([*args, "--steps", "1"])
    assert "checkpoint is missing" in capsys.readouterr().out
    model = json.loads((out / "results.json").read_text())["models"][key]
    assert model["steps"] == 1 and [s["steps_from"] for s in model["sessions"]] == [0]


def test_next_target() -> None:
    """Full runs train in calls of about CHUNK_S wall seconds, in whole validation intervals,
    never past the early-stopping point; --quick in two halves."""
    s = {"steps": 1000, "val_every": 100, "patience": 300, "chunk": None}
    assert reproduce.next_target(s, 0, 0, 500.0, None) == 100  # first call: one interval
    per_step = reproduce.CHUNK_S / 250  # 250 steps fit in CHUNK_S
    assert reproduce.next_target(s, 100, 100, 500.0, per_step) == 300
    assert reproduce.next_target(s, 100, 100, reproduce.CHUNK_S / 2, per_step) == 200
    assert reproduce.next_target(s, 100, 100, 1.0, per_step) == 200  # at least one interval
    assert reproduce.next_target(s, 300, 100, 500.0, per_step) == 400  # early stop at 100 + 300
    s = {"steps": 1000, "val_every": 0, "patience": 0, "chunk": None}
    assert reproduce.next_target(s, 990, 0, 500.0, per_step) == 1000
    assert reproduce.next_target({"steps": 5, "chunk": 3}, 3, 0, 500.0, None) == 5


def test_render_every_cell_and_unrun(tmp_path: Path) -> None:
    """The table has a row for each of the 30 cells with its published number; cells without a
    result say "not yet run"; a full-protocol result is not labelled smoke, a --quick one is."""
    cells = reproduce.protocols()
    empty = reproduce_render.markdown(None, cells)
    for name, p in cells.items():
        row = next(line for line in empty.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {p.published:.2f}" in row and "| not yet run |" in row
    assert "SMOKE" not in empty and "0 of 30 cells scored" in empty
    name, p = "maml/omniglot-20w5s", cells["maml/omniglot-20w5s"]
    results = {"mode": "full protocol", "paired": {}, "calls": [{"wall_seconds": 540.0}],
               "models": {p.model_key: {"steps": 60000, "target_steps": 60000, "seconds": 5400.0,
                                        "episodes": "20w5s5q x 16"}},
               "cells": {name: {"mode": "full protocol", "mean": 0.9876, "ci95": 0.0012,
                                "episodes": 1000, "query": 15, "stopped": "60000 steps",
                                "device": "NVIDIA H100 80GB HBM3", "date": "2026-11-24"}}}
    table = reproduce_render.markdown(results, cells)
    assert (f"| {name} | 98.90 | 98.76 +- 0.12 | 20w5s5q x 16, 60,000 steps, last | 20w5s5q x "
            "16, 60,000 / 60,000 steps, 90 min | 1000 (15) | 60000 steps | NVIDIA H100 80GB HBM3 | "
            "2026-11-24 |") in table
    assert table.count("| not yet run |") == 29 and "SMOKE" not in table
    results["mode"] = results["cells"][name]["mode"] = "smoke (--quick)"
    smoke = reproduce_render.markdown(results, cells)
    assert "98.76 +- 0.12 (SMOKE, not a result)" in smoke and smoke.startswith("**SMOKE")
    results["mode"] = results["cells"][name]["mode"] = "reduced (--steps 500)"
    reduced = reproduce_render.markdown(results, cells)
    assert "98.76 +- 0.12 (reduced (--steps 500), not the full protocol)" in reduced


def test_splice_between_markers(tmp_path: Path) -> None:
    md = tmp_path / "B.md"
    md.write_text("# B\nintro\n<!-- reproduce-table:start -->\nold table\n"
                  "<!-- reproduce-table:end -->\nafter\n<!-- reproduce-smoke:start -->\nold smoke\n"
                  "<!-- reproduce-smoke:end -->\n")
    reproduce.main(["--render", "--splice", str(md), "--out-dir", str(tmp_path / "none")])
    text = md.read_text()
    assert text.startswith("# B\nintro\n<!-- reproduce-table:start -->\n0 of 30 cells scored")
    assert "old table" not in text and "after\n<!-- reproduce-smoke:start -->\nold smoke" in text
    assert text.count("| not yet run |") == 30
    reproduce.main(["--render", "--quick", "--splice", str(md), "--out-dir", str(tmp_path / "x")])
    assert "old smoke" not in md.read_text() and "after\n" in md.read_text()
    smoke = tmp_path / "smoke"  # smoke results rendered without --quick still go to the smoke place
    smoke.mkdir()
    (smoke / "results.json").write_text(json.dumps({"mode": "smoke (--quick)", "cells": {},
                                                    "models": {}, "paired": {}}))
    table_before = md.read_text().split("<!-- reproduce-smoke:start -->")[0]
    reproduce.main(["--render", "--splice", str(md), "--out-dir", str(smoke)])
    assert md.read_text().split("<!-- reproduce-smoke:start -->")[0] == table_before
    (tmp_path / "C.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match="reproduce-table:start"):
        reproduce.main(["--render", "--splice", str(tmp_path / "C.md"), "--out-dir",
                        str(tmp_path / "none")])


def test_readme_summary_grid(tmp_path: Path) -> None:
    """The README's grid: a row per method, a column per setting, the published figure in every
    entry, ours only from full-protocol results; spliced into a file holding only its markers."""
    cells = reproduce.protocols()
    name = "relation/omniglot-20w1s"
    results = {"cells": {name: {"mode": "full protocol", "mean": 0.9712},
                         "maml/omniglot-5w1s": {"mode": "smoke (--quick)", "mean": 0.3}}}
    grid = reproduce_render.summary(results, cells)
    rows = [line for line in grid.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| protonet", "| matching", "| relation", "| maml",
                                                 "| maml_fo"]
    relation = next(r for r in rows if r.startswith("| relation"))
    assert relation.split(" | ")[3] == "**97.1** (97.6)"
    assert "**30.0**" not in grid and grid.count("not yet run") == 29
    assert "1 of 30 cells measured" in grid
    md = tmp_path / "README.md"
    md.write_text("intro\n<!-- reproduce-summary:start -->\nold grid\n<!-- reproduce-summary:end -->\n"
                  "after\n")
    reproduce.main(["--render", "--splice", str(md), "--out-dir", str(tmp_path / "none")])
    text = md.read_text()
    assert "old grid" not in text and text.count("not yet run (") == 30 and text.endswith("after\n")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "omniglot").is_dir()
                    or not (SHARED_DATA / "miniimagenet").is_dir(),
                    reason="needs ../shared/data (Omniglot and mini-ImageNet)")
def test_quick_every_cell(tmp_path: Path) -> None:
    reproduce.main(["--quick", "--out-dir", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["cells"]) == len(reproduce.protocols())
    assert all(len(pairs) == 10 for pairs in results["paired"].values())


def tta_results() -> dict:
    """A hand-made time-to-accuracy run on a 2-core CPU: ProtoNet's 60-way 1-shot model (serving
    Omniglot 5- and 20-way 1-shot) capped at 30 training minutes; the 5-way published figure
    reached at its 24-minute point, the 20-way one never; a second model still training."""
    cells = reproduce.protocols()
    key = cells["protonet/omniglot-5w1s"].model_key
    cpu = "CPU (x86_64, 2 cores, 1 threads)"
    curve = [{"train_minutes": 6.0, "steps": 500, "episodes": 200,
              "accuracy": {"omniglot-5w1s": 0.95, "omniglot-20w1s": 0.85}},
             {"train_minutes": 24.0, "steps": 2000, "episodes": 200,
              "accuracy": {"omniglot-5w1s": 0.99, "omniglot-20w1s": 0.93}}]
    cell = {"mode": reproduce_render.TIME_TO_ACCURACY, "model": key, "episodes": 1000, "query": 15,
            "ci95": 0.002, "train_seconds": 1800.0, "device": cpu, "date": "2026-12-01",
            "stopped": "time cap: 30 min of training (2,500 steps)"}
    return {"mode": reproduce_render.TIME_TO_ACCURACY, "paired": {}, "calls": [],
            "models": {key: {"steps": 2500, "target_steps": 1_000_000, "seconds": 1800.0,
                             "episodes": "60w1s5q x 1", "curve": curve,
                             "stopped": "time cap: 30 min of training (2,500 steps)"},
                       cells["maml_fo/omniglot-5w1s"].model_key: {
                           "steps": 300, "target_steps": 60000, "seconds": 900.0,
                           "curve": [{"train_minutes": 15.0, "steps": 300, "episodes": 200,
                                      "accuracy": {"omniglot-5w1s": 0.8}}]}},
            "cells": {"protonet/omniglot-5w1s": {**cell, "setting": "omniglot-5w1s", "mean": 0.989},
                      "protonet/omniglot-20w1s": {**cell, "setting": "omniglot-20w1s",
                                                  "mean": 0.931}}}


def test_render_time_to_accuracy_cells() -> None:
    """Cells of a time-to-accuracy run say what they are: the published figure reached (at the
    first curve point at or above it) or not in so many CPU hours of training, with the papers'
    episode shapes and shorter training; each model's curve is a table of its own."""
    cells = reproduce.protocols()
    table = reproduce_render.markdown(tta_results(), cells)
    note = "papers' episode shapes, shorter training than the papers')"
    assert ("| protonet/omniglot-5w1s | 98.80 | 98.90 +- 0.20 (published 98.8 reached in 0.4 CPU h; "
            f"{note} |") in table
    assert ("| protonet/omniglot-20w1s | 96.00 | 93.10 +- 0.20 (published 96 not reached in 0.5 "
            f"CPU h; {note} |") in table
    assert "not the full protocol" in table and "time cap: 30 min of training" in table
    assert ("| maml_fo/omniglot-5w1s | 98.30 | not yet run (training: 300 steps so far; 80.00 % "
            "after 15 min of training, 200 test episodes) |") in table
    curve = table.split("Time to accuracy: test accuracy")[1]
    assert ("**protonet-omniglot-60w1s5q-b1** (time cap: 30 min of training (2,500 steps); "
            "published %: omniglot-5w1s 98.8, omniglot-20w1s 96)") in curve
    assert "| training minutes | steps | omniglot-5w1s % | omniglot-20w1s % | test episodes |" in curve
    assert "| 24 | 2,000 | 99.00 | 93.00 | 200 |" in curve
    assert "**maml_fo-omniglot-5w1s1q-b32** (training; published %: omniglot-5w1s 98.3)" in curve
    grid = reproduce_render.summary(tta_results(), cells)
    assert ("| protonet | 98.9 (published 98.8 reached in 0.4 CPU h; papers' episode shapes, "
            "shorter training) |") in grid
    assert "89.4 (published" not in grid and "**" not in grid.split("\n\n")[1]
    assert "93.1 (published 96 not reached in 0.5 CPU h; papers' episode shapes, shorter " \
           "training)" in grid
    assert "0 of 30 cells measured with the full protocol; 2 in time to accuracy" in grid
    assert grid.count("not yet run") == 28


def test_splice_time_to_accuracy(tmp_path: Path) -> None:
    """A time-to-accuracy run's table goes between its own markers, never over the
    full-protocol table; the README's grid takes its cells."""
    out = tmp_path / "reproduce-cpu"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(tta_results()))
    md = tmp_path / "B.md"
    md.write_text("<!-- reproduce-table:start -->\nfull\n<!-- reproduce-table:end -->\n"
                  "<!-- reproduce-time-to-accuracy:start -->\nold\n"
                  "<!-- reproduce-time-to-accuracy:end -->\n<!-- reproduce-summary:start -->\n"
                  "old grid\n<!-- reproduce-summary:end -->\n")
    reproduce.main(["--render", "--splice", str(md), "--out-dir", str(out)])
    text = md.read_text()
    assert "\nfull\n" in text and "\nold\n" not in text and "old grid" not in text
    assert "reproduce-cpu/results.json" in text and "98.9 (published 98.8 reached" in text
