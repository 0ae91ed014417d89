"""benchmarks/label_efficiency.py: the models of each line and level (labelled subsets, the
fine-tuned line from the shared self-supervised backbone, the semi-supervised line with the
unlabelled rest, all without the held-out images), their cells (val episodes and held-out
images), the pairing against ``sup`` at the same level, resuming, and the rendered table and
figure, on tiny data in this process."""

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

import label_efficiency as bench  # noqa: E402
import label_efficiency_render as render  # noqa: E402
from label_efficiency_protocols import (  # noqa: E402
    PRESETS,
    SEMI_LINES,
    SMALL_HEADS,
    line_kind,
    models,
)

from episodes import FixedEpisodes  # noqa: E402

from .conftest import tiny_rgb  # noqa: E402


def test_models_order_and_kinds() -> None:
    assert models(("sup", "ft-rotation", "pseudo-label"), (2, 5)) == [
        "ssl-rotation", "sup@2", "pseudo-label@2", "sup@5", "pseudo-label@5",
        "ft-rotation@2", "ft-rotation@5"]
    assert [line_kind(n) for n in ("sup", "ft-moco", "fixmatch")] == [
        "supervised", "fine-tuned", "semi-supervised"]
    assert line_kind("ft-triplet") == "fine-tuned"
    with pytest.raises(ValueError, match="choose from sup, ft-rotation"):
        line_kind("ft-nothing")
    assert models(("sup", "ft-gan"), (2,), ("triplet", "gan")) == [
        "ssl-gan", "ssl-triplet", "sup@2", "ft-gan@2"]
    gpu = PRESETS["gpu"]
    assert len(gpu.levels) == 7 and len(gpu.lines) == 9


def test_lines_cells_pairs_and_render(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = {"train": tiny_rgb(4, 0), "val": tiny_rgb(5, 1, per_class=20)}
    data["train"].images[:, 0, 0, 0] = torch.arange(48, dtype=torch.uint8)  # each its position
    monkeypatch.setattr(bench, "load_split", lambda split, args: data[split])
    seen: dict[str, dict[str, set[int]]] = {}  # what each model trained on and was scored on

    def marks(ds) -> set[int]:
        return set(ds.images[:, 0, 0, 0].tolist())

    def spy_setup(key, train_ds, args):
        out = real_setup(key, train_ds, args)
        sampler = out[2]
        seen[key] = {"train split": marks(train_ds), "sampled": marks(sampler.dataset)}
        if hasattr(sampler, "unlabelled"):
            seen[key]["unlabelled"] = marks(sampler.unlabelled.dataset)
        return out

    def spy_heldout(learner, held, classes):
        seen[next(reversed(seen))]["held out"] = marks(held)
        assert classes == held.class_names == data["train"].class_names  # the same indices
        return real_heldout(learner, held, classes)

    real_setup, real_heldout = bench.setup, bench.heldout_cell
    monkeypatch.setattr(bench, "setup", spy_setup)
    monkeypatch.setattr(bench, "heldout_cell", spy_heldout)

    def test_episodes(dataset, n_way, k_shot, q_query, count, name, seed=2017) -> FixedEpisodes:
        return FixedEpisodes.generate(dataset, n_way, k_shot, q_query, count, seed)

    monkeypatch.setattr(bench.grid.common, "test_episodes", test_episodes)
    preset = replace(PRESETS["quick"], image_size=16, ssl_batch=8, ssl_steps=1, steps=1, batch=8,
                     test_episodes=6, levels=(1, 3), holdout=3)
    args = argparse.Namespace(preset=preset, out_dir=tmp_path, device=torch.device("cpu"),
                              time_left=float("inf"), results=bench.grid.empty_results(),
                              results_path=tmp_path / "results.json", env={"device": "cpu"})
    bench.check_holdout(args.results, preset.holdout, tmp_path)  # as main does
    lines = preset.lines
    trained = ["ssl-rotation", "sup@1", "sup@3", "ft-rotation@1", "pseudo-label@3"]
    for key in trained:  # a part of the grid, to keep the test short
        bench.train_one(key, args)
        bench.collect(key, args)
    recs = args.results["models"]
    assert set(recs) == set(trained)
    assert all(r["status"] == "done" and r["steps"] == 1 for r in recs.values())
    assert all(r["train_images"] == 36 and r["heldout_images"] == 12 for r in recs.values())
    # the same 12 held-out images for every model; none in its train split (the pre-training's
    # images), its labelled subset or its unlabelled pool
    held = seen["sup@1"]["held out"]
    assert len(held) == 12 and all(s["held out"] == held for k, s in seen.items() if "@" in k)
    assert "held out" not in seen["ssl-rotation"]  # no classifier over the train classes
    assert all(not (held & part) for s in seen.values() for n, part in s.items() if n != "held out")
    assert len(seen["pseudo-label@3"]["unlabelled"]) == 24 and len(seen["ssl-rotation"]["sampled"]) == 36
    assert recs["sup@1"]["labelled_images"] == 4 and recs["sup@3"]["labelled_images"] == 12
    assert recs["sup@1"]["batch"] == 4 and recs["pseudo-label@3"]["batch"] == 8
    # the fine-tuned line starts from the self-supervised backbone, the baseline does not
    ck = {k: torch.load(tmp_path / "checkpoints" / k / "last.pt", weights_only=True)
          for k in ("ssl-rotation", "ft-rotation@1")}
    assert ck["ft-rotation@1"]["spec"]["method"] == "classifier"
    assert ck["ssl-rotation"]["spec"]["method"] == "rotation"
    cells = args.results["cells"]
    assert len(cells["sup@1/5w1s"]["accuracies"]) == 6
    assert set(args.results["paired"]) == {f"{k}/{c}" for k in trained[3:]
                                           for c in ("5w1s", "5w5s", "heldout")}
    assert {n for n in cells if n.endswith("/heldout")} == {f"{k}/heldout" for k in trained[1:]}
    # the held-out cell: the classifier's accuracy, as its own classify() gives it
    sup1 = bench.grid.load_model(tmp_path, "sup@1", "cpu").eval()
    held_ds = bench.train_parts(args)[1]
    with torch.no_grad():
        hits = (sup1.classify(held_ds.images.float() / 255).argmax(1) == held_ds.targets).int()
    assert cells["sup@1/heldout"]["accuracies"] == hits.tolist()
    assert cells["sup@1/heldout"]["mean"] == pytest.approx(float(hits.float().mean()))
    hp = args.results["paired"]["pseudo-label@3/heldout"]
    hdiff = torch.tensor(cells["pseudo-label@3/heldout"]["accuracies"]) - torch.tensor(
        cells["sup@3/heldout"]["accuracies"])
    assert hp["mean_diff"] == pytest.approx(float(hdiff.float().mean())) and hp["images"] == 12
    assert 0 <= hp["mcnemar_p"] <= 1
    p = args.results["paired"]["pseudo-label@3/5w5s"]
    diff = torch.tensor(cells["pseudo-label@3/5w5s"]["accuracies"]) - torch.tensor(
        cells["sup@3/5w5s"]["accuracies"])
    assert p["mean_diff"] == pytest.approx(float(diff.mean()))
    # a second call finds every model done and trains nothing
    before = (tmp_path / "checkpoints" / "sup@1" / "last.pt").stat().st_mtime_ns
    args.budget = bench.grid.Budget.of_minutes(None)
    assert bench.ensure_trained("sup@1", args, None)
    assert (tmp_path / "checkpoints" / "sup@1" / "last.pt").stat().st_mtime_ns == before

    table = render.render_table(args.results, "quick", lines, (1, 3, 9))
    row = [r for r in table.splitlines() if r.startswith("| pseudo-label |")][1]  # 5-shot
    assert f"{100 * p['mean_diff']:+.2f}" in row and row.startswith("| pseudo-label | - | ")
    assert row.endswith("| - |")
    held_row = [r for r in table.splitlines() if r.startswith("| pseudo-label |")][2]
    assert f"{100 * hp['mean_diff']:+.2f}, p " in held_row and "3 per class, seed 1" in table
    assert "| ft-rotation |" in table and " + " in table  # pre-training seconds beside
    assert "`ssl-rotation` " + render.mean_ci(cells["ssl-rotation/5w1s"]) in table
    png = tmp_path / "figure.png"
    render.render_figure(args.results, "quick", lines, (1, 3), png)
    head = png.read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(head[16:20], "big") == round(5.5 * 3 * 110)  # three panels wide


def test_results_of_another_kind_are_refused(tmp_path: Path) -> None:
    bench.grid.save_results(bench.grid.empty_results("ssl"), tmp_path / "results.json")
    with pytest.raises(SystemExit, match="another kind of run"):
        bench.main(["--quick", "--out-dir", str(tmp_path), "--render"])
    assert json.loads((tmp_path / "results.json").read_text())["mode"] == "ssl"


@pytest.mark.parametrize("key", ["ssl-moco", *(f"{m}@3" for m in SEMI_LINES)])
def test_every_line_of_the_gpu_preset_sets_up(key: str, tmp_path: Path) -> None:
    """The models of the lines the CPU run leaves out: their learner, sampler and one loss (the
    semi-supervised ones on 3 labels per class and the unlabelled rest)."""
    args = argparse.Namespace(preset=replace(PRESETS["gpu"], image_size=16, batch=4, ssl_batch=8,
                                             ssl_options=SMALL_HEADS),
                              out_dir=tmp_path)
    torch.manual_seed(0)
    learner, spec, sampler, steps, cfg = bench.setup(key, tiny_rgb(4, 0), args)
    assert steps == (args.preset.ssl_steps if key.startswith("ssl-") else args.preset.steps)
    if key.startswith("ssl-"):
        assert spec.method == "moco" and cfg["optimizer"] == "adam"
    else:
        assert spec.method == key.split("@")[0] and cfg["optimizer"] == "sgd"
        assert len(sampler.dataset) == 12 and sampler.batch_size == 4
    loss, _ = learner.batch_loss(sampler.sample())
    assert torch.isfinite(loss)


def test_levels_beyond_the_smallest_class_are_refused() -> None:
    bench.check_levels((2, 12), ("sup", "ft-rotation"), 12)
    bench.check_levels((11,), ("sup", "pseudo-label"), 12)
    with pytest.raises(SystemExit, match="^--levels 12: .* left unlabelled: give levels of at "
                       "most 11$"):
        bench.check_levels((2, 12), ("sup", "pseudo-label"), 12)
    with pytest.raises(SystemExit, match="at most 12$"):
        bench.check_levels((13,), ("sup",), 12)
