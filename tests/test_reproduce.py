"""benchmarks/reproduce.py (issue 10's harness): --quick on a few cells with tiny data, the results
JSON, the rendered table, and resuming a cell whose budget ran out; the full --quick (every cell on
the real data) is marked slow and skips without ../shared/data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import reproduce  # noqa: E402

from episodes import FixedEpisodes, ImagePipeline, TensorClassDataset  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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
    """Tiny Omniglot-shaped (60/20/20 classes, 28x28) and mini-ImageNet-shaped (5 + 5 classes,
    84x84) splits; fixed test episodes saved in ``tmp_path`` instead of benchmarks/episodes."""
    sizes = {("omniglot", "train"): 60, ("omniglot", "val"): 20, ("omniglot", "test"): 20,
             ("mini", "train"): 5, ("mini", "val"): 5}
    data = {key: tiny(n, 1 if key[0] == "omniglot" else 3, 28 if key[0] == "omniglot" else 84, i)
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
    reproduce.main(["--quick", "--cells", CELLS, "--out-dir", str(out), "--test-episodes", "6"])
    results = json.loads((out / "results.json").read_text())
    assert set(results["cells"]) == set(CELLS.split(","))
    for cell in results["cells"].values():
        assert cell["status"] == "done" and cell["mode"] == "smoke (--quick)"
        assert len(cell["accuracies"]) == cell["episodes"] == 6 and cell["query"] == 15
        assert 0 <= cell["mean"] <= 1 and cell["train_steps"] == reproduce.QUICK["steps"]
    # ProtoNet 5- and 20-way 1-shot are one 60-way model, trained once and scored twice
    assert results["cells"]["protonet/omniglot-5w1s"]["model"] == \
        results["cells"]["protonet/omniglot-20w1s"]["model"]
    assert len(results["models"]) == 2 and len(results["calls"]) == 1
    capsys.readouterr()
    reproduce.main(["--render", "--out-dir", str(out)])
    table = capsys.readouterr().out
    assert "| protonet/omniglot-5w1s |" in table and "smoke run, not a result" in table
    assert "| 98.80 |" in table  # the published number beside the cell
    assert table.count("not yet run") == 30 - 3
    assert "49.42 +- 0.78" in table  # a cell not run still shows its published number


def test_resume_after_budget(tiny_data: Path) -> None:
    """A call whose budget runs out mid-training leaves the cell to the next call, which
    continues the same model from its checkpoint and scores it."""
    out, cell, key = tiny_data / "out", "maml/omniglot-5w1s", "maml-omniglot-5w1s1q-b32"
    args = ["--quick", "--cells", cell, "--out-dir", str(out), "--test-episodes", "4",
            "--steps", "30"]
    reproduce.main([*args, "--budget-minutes", "0.005"])
    results = json.loads((out / "results.json").read_text())
    model = results["models"][key]
    assert cell not in results["cells"] and model["status"] == "training"
    first = model["steps"]
    assert 0 < first < 30
    reproduce.main(args)
    results = json.loads((out / "results.json").read_text())
    model = results["models"][key]
    assert results["cells"][cell]["status"] == "done" and model["steps"] == 30
    assert [s["steps_from"] for s in model["sessions"]] == [0, first]
    assert len(results["calls"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "omniglot").is_dir()
                    or not (SHARED_DATA / "miniimagenet").is_dir(),
                    reason="needs ../shared/data (Omniglot and mini-ImageNet)")
def test_quick_every_cell(tmp_path: Path) -> None:
    reproduce.main(["--quick", "--out-dir", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["cells"]) == len(reproduce.protocols())
    assert all(len(pairs) == 10 for pairs in results["paired"].values())
