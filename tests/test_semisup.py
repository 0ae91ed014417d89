"""Semi-supervised learners: every method trains, never reads the labels of its unlabelled images,
and follows its paper on hand-checked details; ``fewshot pretrain`` with a labelled subset, and
its checkpoint as a backbone for ``eval --head`` and ``train --init``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from episodes import SemiSupervisedSampler, TensorClassDataset, labelled_index, subset_items, unlabelled_pool
from fewshot import build_learner, make_spec
from fewshot.cli import main
from fewshot.engine.train import TrainConfig, train
from fewshot.registry import fill_from_data, method_names

from .conftest import data_args

SMALL = {"hidden": 8, "mu": 2}


def dataset(classes: int = 3, per: int = 12, size: int = 16) -> TensorClassDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per, 3, size, size), generator=g, dtype=torch.uint8)
    return TensorClassDataset(images, torch.arange(classes).repeat(per),
                              [f"c{i}" for i in range(classes)])


def learner_and_sampler(method: str, ds: TensorClassDataset, index: torch.Tensor,
                        **options: object):
    spec = make_spec(method, "conv4", 3, 16, fill_from_data(method, {**SMALL, **options},
                                                             classes=ds.num_classes))
    torch.manual_seed(0)
    learner = build_learner(spec)
    labelled_view, views = learner.view_augments()
    sampler = SemiSupervisedSampler(subset_items(ds, index), unlabelled_pool(ds, index), 3,
                                    learner.mu, seed=0, labelled_view=labelled_view,
                                    unlabelled_views=views)
    return spec, learner, sampler


@pytest.mark.parametrize("method", method_names("semi-supervised"))
def test_every_method_trains_without_reading_unlabelled_labels(method: str) -> None:
    ds = dataset()
    index = labelled_index(ds, per_class=2)
    spec, learner, sampler = learner_and_sampler(method, ds, index)
    before = {k: v.clone() for k, v in learner.backbone.state_dict().items()}
    result = train(learner, spec, sampler, TrainConfig(steps=4, lr=0.01, progress=False))
    assert result.steps == 4
    after = learner.state_dict()
    assert any(not torch.equal(before[k], v) for k, v in learner.backbone.state_dict().items())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert "sup_loss" in learner.train_metrics()
    # poison the labels of every image outside the labelled subset: the same training
    poisoned = TensorClassDataset(ds.images, ds.targets.clone(), ds.class_names)
    rest = torch.ones(len(ds), dtype=torch.bool)
    rest[index] = False
    poisoned.targets[rest] = (ds.targets[rest] + 1) % 3
    spec, again, sampler = learner_and_sampler(method, poisoned, index)
    train(again, spec, sampler, TrainConfig(steps=4, lr=0.01, progress=False))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in after.items())


def test_fixmatch_and_uda_losses_by_hand() -> None:
    ds = dataset()
    index = labelled_index(ds, per_class=2)
    for method, options in (("fixmatch", {"threshold": 0.34}), ("uda", {"threshold": 0.34})):
        _, learner, sampler = learner_and_sampler(method, ds, index, **options)
        batch = sampler.sample()
        loss, _, metrics = learner.semi_loss(batch)
        lab, unl = learner.labelled_and_views(batch)
        expect = F.cross_entropy(lab, batch.labels)
        terms = []
        for weak, strong in zip(unl[0].detach(), unl[1], strict=True):  # image by image
            p = weak.softmax(0)
            if p.max() < 0.34:
                terms.append(torch.zeros(()))
            elif method == "fixmatch":
                terms.append(-strong.log_softmax(0)[p.argmax()])
            else:
                terms.append(-((weak / 0.4).softmax(0) * strong.log_softmax(0)).sum())
        assert torch.allclose(loss, expect + torch.stack(terms).mean(), atol=1e-5)
        assert metrics["mask"] == pytest.approx(sum(bool(t != 0) for t in terms) / len(terms))


def test_mean_teacher_is_an_exponential_average() -> None:
    ds = dataset()
    _, learner, sampler = learner_and_sampler("mean-teacher", ds, labelled_index(ds, per_class=2),
                                              ema=0.9)
    old = [p.clone() for p in learner.teacher_backbone.parameters()]
    train(learner, None, sampler, TrainConfig(steps=1, lr=0.1, progress=False, checkpoint_dir=None))
    for t0, t1, s in zip(old, learner.teacher_backbone.parameters(), learner.backbone.parameters(),
                         strict=True):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s.detach(), atol=1e-6)
    assert not any(p.requires_grad for p in learner.teacher_backbone.parameters())


def test_noisy_student_rounds_and_noise() -> None:
    ds = dataset()
    _, learner, sampler = learner_and_sampler("noisy-student", ds, labelled_index(ds, per_class=2),
                                              rounds=2)
    rounds, teachers = [], []

    def watch(_: object) -> dict[str, float]:
        return {}
    learner.begin_training(sampler, 6)
    for _ in range(6):  # steps 0-1 the first teacher, 2-3 round 1, 4-5 round 2
        rounds.append(int(learner.teacher_round))
        learner.train()
        learner.batch_loss(sampler.sample())[0].backward()
        with torch.no_grad():
            for p in learner.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
                    p.grad = None
        learner.end_step()
        if int(learner.teacher_round) != rounds[-1]:
            teachers.append(all(torch.equal(a, b) for a, b in zip(
                learner.teacher_backbone.state_dict().values(),
                learner.backbone.state_dict().values(), strict=True)))
    assert rounds == [0, 0, 1, 1, 2, 2] and teachers == [True, True]
    assert learner.stochastic_blocks == 0  # conv4 has no residual blocks
    spec = make_spec("noisy-student", "resnet12", 3, 16, {"num_classes": 3})
    assert build_learner(spec).stochastic_blocks == 4


def pretrain_then_heads_and_init(data: list[str], out: Path, way: str, capsys) -> dict:
    """``pretrain --method fixmatch --labels-per-class 2``, then its checkpoint under ``eval
    --head prototype`` and as ``train --init``; returns the labelled subset run.json records."""
    main(["pretrain", *data, "--method", "fixmatch", "--labels-per-class", "2", "--label-seed",
          "3", "--batch-size", "4", "--option", "mu=1", "--option", "hidden=8", "--steps", "2",
          "--val-episodes", "0", "--quiet", "--out", str(out / "fixmatch")])
    record = json.loads((out / "fixmatch" / "run.json").read_text())
    assert record["spec"]["method"] == "fixmatch"
    main(["eval", *data, "--checkpoint", str(out / "fixmatch" / "last.pt"), "--head", "prototype",
          "--way", way, "--episodes", "3", "--query", "2"])
    assert f"head prototype: {way}-way 1-shot" in capsys.readouterr().out
    main(["train", *data, "--init", str(out / "fixmatch" / "last.pt"), "--option", "hidden=8",
          "--way", way, "--steps", "1", "--query", "2", "--val-episodes", "0", "--quiet",
          "--out", str(out / "proto")])
    assert (out / "proto" / "last.pt").is_file()
    chosen = record["resolved"]["labelled"]
    assert chosen["per_class"] == 2 and chosen["seed"] == 3
    assert chosen["unlabelled"] == chosen["of"] - len(chosen["index"])
    return chosen


def test_pretrain_labelled_subset_then_heads_and_init(tree: Path, capsys) -> None:
    chosen = pretrain_then_heads_and_init(data_args(tree), tree, "2", capsys)
    assert len(chosen["index"]) == 8 and chosen["of"] == 24  # 4 train classes of 6 images


@pytest.mark.slow  # generates the embedded dataset (about 20 s) when the session has not yet
def test_pretrain_labelled_subset_on_the_embedded_dataset(tmp_path: Path, capsys) -> None:
    chosen = pretrain_then_heads_and_init(["--dataset", "embedded", "--device", "cpu"], tmp_path,
                                          "5", capsys)
    assert len(chosen["index"]) == 1800 and chosen["of"] == 18000


@pytest.mark.parametrize("argv, message", [
    (["--method", "fixmatch"], "need unlabelled images: give --labels-per-class"),
    (["--method", "simclr", "--labels-per-class", "2"], "self-supervised methods read no labels"),
    (["--method", "fixmatch", "--labels-per-class", "7"], "has only 6 images"),
    (["--method", "fixmatch", "--labels-per-class", "2", "--augment", "standard"],
     "draws its own weak and strong views"),
    (["--labels-per-class", "2", "--label-fraction", "0.5"], "give one"),
    (["--extra-unlabelled", "x"], "for semi-supervised methods")])
def test_bad_label_flags_are_one_line(tree: Path, capsys, argv: list[str],
                                      message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pretrain", *data_args(tree), "--steps", "1", "--out", str(tree / "run"), *argv])
    err = capsys.readouterr().err
    assert info.value.code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert not (tree / "run").exists()


@pytest.mark.parametrize("method", method_names("semi-supervised"))
def test_pretrain_resumes_exactly(tree: Path, method: str, stopped_and_resumed) -> None:
    """Stopped after its first step and resumed, every method ends bit-identical to an
    uninterrupted run (Noisy Student: across its two teacher changes, before steps 3 and 4)."""
    run = ["pretrain", *data_args(tree), "--method", method, "--labels-per-class", "2",
           "--batch-size", "4", "--option", "hidden=8", "--option", "mu=2", "--steps", "4",
           "--val-episodes", "0", "--checkpoint-every", "1", "--quiet"]
    full = stopped_and_resumed(run, tree, 4)
    if method in ("mean-teacher", "noisy-student"):
        assert any(k.startswith("teacher_backbone.") for k in full["model"]), sorted(full["model"])
    if method == "noisy-student":  # the second student round was reached
        assert int(full["model"]["teacher_round"]) == 2


def test_supervised_and_episodic_training_on_the_labelled_subset(tree: Path) -> None:
    for command, extra in (("train", ["--way", "2", "--query", "2"]),
                           ("pretrain", ["--batch-size", "4"])):
        out = tree / command
        main([command, *data_args(tree), "--labels-per-class", "4", "--steps", "1",
              "--val-episodes", "0", "--quiet", *extra, "--out", str(out)])
        chosen = json.loads((out / "run.json").read_text())["resolved"]["labelled"]
        assert len(chosen["index"]) == 16 and chosen["unlabelled"] == 0 and chosen["of"] == 24


def test_extra_unlabelled_folder_joins_the_unlabelled_images(tree: Path) -> None:
    extra = tree / "extra" / "nested"
    extra.mkdir(parents=True)
    for i in range(5):  # any size: read at the train images' size and channels
        Image.new("L", (30, 24), 40 * i).save(extra / f"{i}.png")
    out = tree / "extra-run"
    main(["pretrain", *data_args(tree), "--method", "pseudo-label", "--labels-per-class", "2",
          "--extra-unlabelled", str(tree / "extra"), "--batch-size", "4", "--option", "hidden=8",
          "--steps", "1", "--val-episodes", "0", "--quiet", "--out", str(out)])
    chosen = json.loads((out / "run.json").read_text())["resolved"]["labelled"]
    assert chosen["unlabelled"] == chosen["of"] - len(chosen["index"]) + 5
