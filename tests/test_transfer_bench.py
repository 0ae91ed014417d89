"""benchmarks/transfer.py (issue 11's table): every method of a backbone in smoke mode on tiny
data, the results JSON, the paired tests, the rendered table, and resuming after the budget ran
out; the real-data smoke run is marked slow and skips without ../shared/data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import transfer  # noqa: E402
from transfer_protocols import METHODS  # noqa: E402

from episodes import FixedEpisodes, TensorClassDataset  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
from .conftest import tiny_rgb  # noqa: E402


def tiny(classes: int, seed: int, size: int = 20) -> TensorClassDataset:
    return tiny_rgb(classes, seed, per_class=20, size=size)


@pytest.fixture
def tiny_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """8 train and 6 test classes of 20 random 20x20 RGB images; test episodes in tmp_path."""
    data = {"train": tiny(8, 0), "val": tiny(6, 1)}
    monkeypatch.setattr(transfer, "load_split", lambda split, args: data[split])

    def test_episodes(dataset, n_way, k_shot, q_query, count, name, seed=2017) -> FixedEpisodes:
        path = tmp_path / "episodes" / f"{name}-{n_way}w{k_shot}s{q_query}q-{count}.pt"
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            FixedEpisodes.generate(dataset, n_way, k_shot, q_query, count, seed).save(path)
        return FixedEpisodes.load(path)

    monkeypatch.setattr(transfer.common, "test_episodes", test_episodes)
    return tmp_path


def test_quick_every_method(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    out = tiny_data / "out"
    transfer.main(["--quick", "--backbones", "conv4", "--out-dir", str(out),
                   "--test-episodes", "6"])
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 2 * len(METHODS)
    for name, cell in results["cells"].items():
        finetuned = name.endswith(("finetune", "two-stage"))
        assert cell["status"] == "done" and cell["episodes"] == (4 if finetuned else 6), name
        assert 0 <= cell["mean"] <= 1 and cell["mode"] == "preset quick"
    assert set(results["models"]) == {"pretrain-conv4", "protonet-conv4-1shot",
                                      "protonet-conv4-5shot", "metabaseline-conv4-1shot",
                                      "metabaseline-conv4-5shot"}
    assert all(m["steps"] == 3 and m["status"] == "done" for m in results["models"].values())
    assert len(results["paired"]) == 2 * (len(METHODS) - 1)
    two_stage = results["paired"]["conv4/5w1s/pretrain+two-stage"]
    assert two_stage["episodes"] == 4
    cells = results["cells"]
    protonet = cells["conv4/5w1s/protonet"]["accuracies"][:4]
    diff = sum(a - b for a, b in zip(cells["conv4/5w1s/pretrain+two-stage"]["accuracies"],
                                     protonet, strict=True)) / 4
    assert two_stage["mean_diff"] == pytest.approx(diff)
    # the test images' features through the pre-trained backbone: extracted once per shot
    assert set(results["models"]["pretrain-conv4"]["feature_seconds"]) == {"1", "5"}
    capsys.readouterr()
    transfer.main(["--render", "--quick", "--out-dir", str(out)])
    table = capsys.readouterr().out
    assert "| pretrain+logistic |" in table and "(reference)" in table
    assert "shared training" in table and "not yet run" in table  # resnet12 was not selected
    transfer.main(["--render", "--quick", "--backbones", "conv4", "--out-dir", str(out)])
    only = capsys.readouterr().out
    assert "**conv4**" in only and "**resnet12**" not in only and "not yet run" not in only


def test_resume_after_budget(tiny_data: Path) -> None:
    out = tiny_data / "out"
    args = ["--quick", "--backbones", "conv4", "--shots", "1", "--methods", "pretrain+knn",
            "--out-dir", str(out), "--test-episodes", "4", "--steps", "40"]
    transfer.main([*args, "--budget-minutes", "0.004"])
    results = json.loads((out / "results.json").read_text())
    model = results["models"]["pretrain-conv4"]
    first = model["steps"]
    assert model["status"] == "training" and 0 < first < 40 and not results["cells"]
    transfer.main(args)
    results = json.loads((out / "results.json").read_text())
    model = results["models"]["pretrain-conv4"]
    assert model["steps"] == 40 and results["cells"]["conv4/5w1s/pretrain+knn"]["status"] == "done"
    assert [s["steps_from"] for s in model["sessions"]] == [0, first]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "miniimagenet").is_dir(),
                    reason="needs ../shared/data/miniimagenet")
def test_quick_on_mini_imagenet(tmp_path: Path) -> None:
    transfer.main(["--quick", "--backbones", "conv4", "--shots", "1", "--out-dir", str(tmp_path),
                   "--test-episodes", "10"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["cells"]) == len(METHODS)


def test_backbone_step_table(capsys: pytest.CaptureFixture) -> None:
    """benchmarks/backbone_step.py: one row per backbone and size, a positive time each."""
    import backbone_step

    backbone_step.main(["--backbones", "conv4", "resnet12", "--sizes", "16", "--batch", "2",
                        "--iters", "1", "--threads", "1"])
    rows = [ln.split("|") for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("| conv4") or ln.startswith("| resnet12")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("conv4", "16"), ("resnet12", "16")]
    assert all(float(r[3]) > 0 for r in rows)


def test_more_finetune_episodes_continue_a_done_cell(tiny_data: Path) -> None:
    """A larger --finetune-episodes scores the next episodes of a finished fine-tuning cell and
    keeps the ones it has; the frozen-head cells, already complete, are not scored again."""
    out = tiny_data / "out"
    args = ["--quick", "--backbones", "conv4", "--shots", "1", "--methods", "pretrain+knn",
            "pretrain+two-stage", "--out-dir", str(out), "--test-episodes", "6", "--block", "1"]
    transfer.main([*args, "--finetune-episodes", "2"])
    first = json.loads((out / "results.json").read_text())["cells"]
    assert first["conv4/5w1s/pretrain+two-stage"]["episodes"] == 2
    transfer.main([*args, "--finetune-episodes", "4"])
    cells = json.loads((out / "results.json").read_text())["cells"]
    two_stage = cells["conv4/5w1s/pretrain+two-stage"]
    assert two_stage["status"] == "done" and two_stage["episodes"] == 4
    assert two_stage["accuracies"][:2] == first["conv4/5w1s/pretrain+two-stage"]["accuracies"]
    assert cells["conv4/5w1s/pretrain+knn"] == first["conv4/5w1s/pretrain+knn"]
    # another number of test episodes is another set of episodes: refused, nothing written
    before = (out / "results.json").read_text()
    with pytest.raises(SystemExit, match="--test-episodes 6, or another --out-dir"):
        transfer.main([*args[:-4], "--test-episodes", "8", "--block", "1"])
    assert (out / "results.json").read_text() == before
