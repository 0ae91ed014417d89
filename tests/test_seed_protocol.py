"""benchmarks/seed_protocol.py: the 3-FC head's layers and shapes, the held-out images (never
labelled), early stopping on a hand-made validation curve, the frozen backbone of stage 1 and the
moving one of stage 2, the episode-file check, and a whole run on tiny data in this process."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import seed_protocol as bench  # noqa: E402
from seed_protocol_protocols import (  # noqa: E402
    Protocol,
    Stage,
    check_level,
    fc3_head,
    head_width,
    held_out,
)

from episodes import (  # noqa: E402
    FixedEpisodes,
    ImageBatchSampler,
    labelled_index,
    subset_items,
)
from fewshot import build_learner, make_spec  # noqa: E402
from fewshot.engine.checkpoint import save_checkpoint  # noqa: E402

from .conftest import tiny_rgb  # noqa: E402


def test_the_head_is_rotnets_three_layers() -> None:
    assert head_width(64, None) == 1280 and head_width(200, None) == 2048
    assert head_width(64, 8) == 8
    head = fc3_head(256, 64)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 1280), (1280, 1280),
                                                                  (1280, 64)]
    assert [m.bias is not None for m in linears] == [False, False, True]
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert head(torch.randn(5, 256)).shape == (5, 64)


def test_held_out_images_are_never_labelled() -> None:
    ds = tiny_rgb(4, 0, per_class=20)
    parts = held_out(ds, 4, Protocol(val_per_class=3, test_per_class=5))
    assert torch.equal(parts["labelled"], labelled_index(ds, per_class=4, seed=0))
    for name, per_class in (("labelled", 4), ("val", 3), ("test", 5)):
        assert torch.equal(torch.bincount(ds.targets[parts[name]], minlength=4),
                           torch.full((4,), per_class))
    every = torch.cat(list(parts.values()))
    assert len(torch.unique(every)) == len(every) == 4 * 12  # pairwise disjoint
    with pytest.raises(SystemExit, match="--level 13: .* leaves 1 to 12 to label"):
        check_level(13, Protocol(val_per_class=3, test_per_class=5), 20)
    check_level(12, Protocol(val_per_class=3, test_per_class=5), 20)


def curve_run(curve: list[float], max_epochs: int, patience: int) -> tuple[dict, float]:
    """Early stopping of a one-weight module whose weight is the epoch it was trained to."""
    module, seen = nn.Linear(1, 1, bias=False), iter(curve)
    nn.init.constant_(module.weight, -1.0)

    def train_epoch(epoch: int) -> None:
        nn.init.constant_(module.weight, float(epoch))

    rec = bench.early_stopping(module, train_epoch, lambda: next(seen), max_epochs, patience)
    return rec, float(module.weight.detach())


def test_early_stopping_keeps_the_best_epoch_of_a_hand_made_curve() -> None:
    curve = [0.2, 0.5, 0.7, 0.6, 0.7, 0.65, 0.9]
    rec, weight = curve_run(curve, 50, 3)  # epoch 2 best; 3, 4 (a tie), 5 not better: stop
    assert (rec["best_epoch"], rec["epochs"], weight, rec["best_val"]) == (2, 5, 2.0, 0.7)
    assert rec["val_curve"] == curve[:6]
    rec, weight = curve_run(curve, 6, 10)  # no stop before the last epoch, the best
    assert (rec["best_epoch"], rec["epochs"], weight) == (6, 6, 6.0)
    rec, weight = curve_run([0.5, 0.4, 0.3], 50, 2)  # never better than before training
    assert (rec["best_epoch"], rec["epochs"], weight) == (0, 2, -1.0)


def learner_and_data() -> tuple:
    torch.manual_seed(0)
    learner = build_learner(make_spec("classifier", "conv4", 3, 16, {"num_classes": 4}))
    learner.classifier = fc3_head(learner.classifier.in_features, 4, 8)
    ds = tiny_rgb(4, 0)
    return learner, ImageBatchSampler(subset_items(ds, torch.arange(0, 48, 4)), 4, seed=0), ds


def test_stage_one_freezes_the_backbone_and_stage_two_moves_it(monkeypatch) -> None:
    learner, sampler, ds = learner_and_data()
    better = iter(range(100))  # every epoch better than the last: the last epoch is kept
    monkeypatch.setattr(bench, "correct", lambda learner, val: torch.tensor([float(next(better))]))
    state = {k: v.clone() for k, v in learner.backbone.state_dict().items()}  # with BN stats
    head = {k: v.clone() for k, v in learner.classifier.state_dict().items()}
    protocol = Protocol()
    rec = bench.run_stage(learner, Stage("classifier", False, 0.1, 2, 5), protocol, sampler, ds)
    assert rec["best_epoch"] == rec["epochs"] == 2 and rec["steps_per_epoch"] == 3
    assert all(torch.equal(v, state[k]) for k, v in learner.backbone.state_dict().items())
    assert not all(torch.equal(v, head[k]) for k, v in learner.classifier.state_dict().items())
    assert all(p.requires_grad for p in learner.parameters())  # unfrozen again afterwards
    bench.run_stage(learner, Stage("fine-tune", True, 0.01, 2, 5), protocol, sampler, ds)
    moved = [not torch.equal(v, state[k]) for k, v in learner.backbone.state_dict().items()
             if v.is_floating_point()]
    assert all(moved)  # every weight and BatchNorm statistic


def test_correct_is_the_classifier_on_each_image() -> None:
    learner, _, ds = learner_and_data()
    hits = bench.correct(learner, ds)
    assert learner.classifier.training and learner.backbone.training  # modes restored
    learner.eval()
    with torch.no_grad():
        want = learner.classify(ds.images.float() / 255).argmax(1) == ds.targets
    assert torch.equal(hits, want.float())


def test_episode_files_are_compared(tmp_path: Path, monkeypatch) -> None:
    ds = tiny_rgb(6, 1)
    for checkout, seed in (("ours", 2017), ("same", 2017), ("other", 5)):
        for shot in (1, 5):
            path = bench.common.episodes_file("mini-val", 5, shot, 15, 4, tmp_path / checkout)
            path.parent.mkdir(parents=True, exist_ok=True)
            FixedEpisodes.generate(ds, 5, shot, 1, 4, seed).save(path)
    monkeypatch.setattr(bench.common, "CHECKOUT", tmp_path / "ours")
    assert bench.same_episodes(tmp_path / "same", 4) == {1: True, 5: True}
    assert bench.same_episodes(tmp_path / "other", 4) == {1: False, 5: False}
    assert bench.same_episodes(tmp_path / "none", 4) == {1: None, 5: None}
    assert bench.same_episodes(None, 4) == {1: None, 5: None}


def test_a_whole_run_on_tiny_data(tmp_path: Path, monkeypatch, capsys) -> None:
    data = {"train": tiny_rgb(4, 0, per_class=16), "val": tiny_rgb(5, 1, per_class=20)}
    monkeypatch.setattr(bench.labeff, "load_split", lambda split, args: data[split])
    monkeypatch.setattr(bench.grid.common, "test_episodes",
                        lambda ds, n, k, q, count, name, seed=2017:
                        FixedEpisodes.generate(ds, n, k, q, count, seed))
    monkeypatch.setattr(bench, "same_episodes", lambda checkout, count: {1: True, 5: True})
    monkeypatch.setitem(bench.PRESETS, "quick",
                        replace(bench.PRESETS["quick"], image_size=16, test_episodes=6))
    spec = make_spec("rotation", "conv4", 3, 16, {})
    torch.manual_seed(1)
    ssl = build_learner(spec)
    save_checkpoint(tmp_path / "ssl.pt", ssl, spec)
    against = {"cells": {f"ft-rotation@3/5w{s}s": {"mean": 0.5, "ci95": 0.1, "episodes": 6,
                                                     "accuracies": [0.4, 0.6] * 3} for s in (1, 5)}}
    (tmp_path / "le.json").write_text(json.dumps(against))
    argv = ["--quick", "--checkpoint", str(tmp_path / "ssl.pt"), "--level", "3", "--against",
            str(tmp_path / "le.json"), "--out-dir", str(tmp_path / "out")]
    bench.main(argv)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    rec = res["models"]["seed-rotation@3"]
    assert rec["images"] == {"labelled": 12, "val": 8, "test": 8}
    assert rec["holdout"]["per_class"] == 0  # --against records none: every train image
    assert set(rec["stages"]) == {"classifier", "fine-tune"}
    assert all(0 <= s["test"]["mean"] <= 1 and s["test"]["images"] == 8
               for s in rec["stages"].values())
    assert len(res["cells"]["seed-rotation@3/fine-tune/5w5s"]["accuracies"]) == 6
    assert set(res["paired"]) == {f"seed-rotation@3/{st}/5w{s}s - ft-rotation@3"
                                  for st in ("classifier", "fine-tune") for s in (1, 5)} | {
        f"seed-rotation@3/fine-tune/5w{s}s - classifier" for s in (1, 5)}
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| seed-rotation@3 | fine-tune |" in table and "- ft-rotation@3 |" in table
    monkeypatch.setattr(bench, "same_episodes", lambda checkout, count: {1: False, 5: None})
    capsys.readouterr()
    bench.main([*argv[:-1], str(tmp_path / "other")])  # episodes not the same: nothing paired
    printed = capsys.readouterr().out
    assert "not paired at 1 shot: the episode file of" in printed and "differs" in printed
    assert "not paired at 5 shot" in printed and "is not there" in printed
    other = json.loads((tmp_path / "other" / "results.json").read_text())
    assert all(name.endswith(" - classifier") for name in other["paired"])
    out = ["--quick", "--out-dir", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match="--level 13: .* leaves 1 to 12 to label"):
        bench.main([*out, "--checkpoint", str(tmp_path / "ssl.pt"), "--level", "13"])
    with pytest.raises(SystemExit, match="no such file: give the last.pt"):
        bench.main([*out, "--checkpoint", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit, match="--against .*missing.json: no such file"):
        bench.main([*out, "--checkpoint", str(tmp_path / "ssl.pt"), "--against",
                    str(tmp_path / "missing.json")])
    assert not (tmp_path / "x" / "table.md").exists()
    # label_efficiency's run held out 12 of each class's 16: 4 are left to choose from
    (tmp_path / "held.json").write_text(json.dumps({**against, "holdout": {"per_class": 12,
                                                                           "seed": 1}}))
    with pytest.raises(SystemExit, match=r"smallest train class \(4 images\)"):
        bench.main([*out, "--checkpoint", str(tmp_path / "ssl.pt"), "--against",
                    str(tmp_path / "held.json")])
