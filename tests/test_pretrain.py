"""Supervised pre-training on mini-batches (fewshot pretrain), scoring its backbone with heads on
the meta-learners' fixed episodes, and meta-training from it (--init: Meta-Baseline)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from episodes import AugmentConfig, ImageBatchSampler, ImagePipeline, TensorClassDataset
from fewshot.cli import main
from fewshot.engine.checkpoint import load_learner
from fewshot.engine.evaluate import EvalResult, paired_test
from fewshot.engine.train import TrainConfig, make_optimizer

from .conftest import data_args

PRE = ["--batch-size", "6", "--val-episodes", "3", "--val-way", "2", "--val-query", "2",
       "--val-every", "2", "--quiet", "--augment", "standard", "--schedule", "cosine",
       "--option", "label_smoothing=0.1", "--checkpoint-every", "2"]
EVAL = ["--way", "2", "--query", "2", "--episodes", "5"]


def test_batch_sampler_epochs_and_resume():
    ds = TensorClassDataset(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4)
                            .contiguous(), torch.arange(5).repeat_interleave(2),
                            [f"c{i}" for i in range(5)], ImagePipeline(1, 4, "area"))
    sampler = ImageBatchSampler(ds, 3, seed=0)

    def ids(batch) -> list[int]:
        return (batch.images[:, 0, 0, 0] * 255).round().long().tolist()

    epoch = [i for _ in range(3) for i in ids(sampler.sample())]
    assert len(set(epoch)) == 9  # one epoch: 3 batches of distinct items, the 10th dropped
    sampler = ImageBatchSampler(ds, 4, seed=1, augment=AugmentConfig.standard())
    sampler.sample()
    state = sampler.state_dict()
    a = [sampler.sample() for _ in range(4)]
    sampler.load_state_dict(state)
    b = [sampler.sample() for _ in range(4)]
    assert all(torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
               for x, y in zip(a, b, strict=True))


def test_sgd_and_cosine_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt, sched = make_optimizer([p], TrainConfig(steps=4, lr=0.1, optimizer="sgd", momentum=0.5,
                                                 schedule="cosine"))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] < 1e-12 and lrs == sorted(lrs, reverse=True)


def test_pretrain_resume_heads_and_meta_baseline(tree: Path, capsys, stopped_and_resumed):
    d = data_args(tree)
    full = stopped_and_resumed(["pretrain", *d, *PRE, "--steps", "6"], tree, 6)
    assert full["spec"]["method"] == "classifier" and full["spec"]["options"]["num_classes"] == 4
    assert full["pipeline"]["size"] == 16 and (tree / "full" / "best.pt").is_file()
    record = json.loads((tree / "full" / "run.json").read_text())
    assert record["command"] == "pretrain" and record["args"]["schedule"] == "cosine"

    # ProtoNet from scratch and the pre-trained backbone with heads, on the same episodes
    episodes = str(tree / "eps.pt")
    main(["train", *d, "--way", "2", "--query", "2", "--steps", "2", "--val-episodes", "0",
          "--quiet", "--out", str(tree / "proto")])
    main(["eval", *d, "--checkpoint", str(tree / "proto" / "last.pt"), *EVAL,
          "--episodes-file", episodes, "--json", str(tree / "proto.json")])
    for head in ("logistic", "two-stage"):
        main(["eval", *d, "--checkpoint", str(tree / "full" / "best.pt"), *EVAL, "--head", head,
              "--head-option", "steps=1" if head == "two-stage" else "C=2",
              "--episodes-file", episodes, "--json", str(tree / f"{head}.json")])
    assert "head logistic: 2-way 1-shot" in capsys.readouterr().out
    results = {n: json.loads((tree / f"{n}.json").read_text())
               for n in ("proto", "logistic", "two-stage")}
    as_result = {n: EvalResult(torch.tensor(r["accuracies"]), 2, 1, 2) for n, r in results.items()}
    assert paired_test(as_result["logistic"], as_result["proto"])["mean_diff"] == (
        results["logistic"]["mean"] - results["proto"]["mean"])

    # a weights file of the backbone, scored without a fewshot checkpoint
    learner, _, _ = load_learner(tree / "full" / "best.pt")
    torch.save(learner.backbone.state_dict(), tree / "backbone.pth")
    main(["eval", *d, "--backbone", "conv4", "--weights", str(tree / "backbone.pth"), *EVAL,
          "--head", "logistic", "--head-option", "C=2", "--episodes-file", episodes,
          "--json", str(tree / "weights.json")])
    assert json.loads((tree / "weights.json").read_text())["accuracies"] == \
        results["logistic"]["accuracies"]

    # Meta-Baseline: ProtoNet (cosine, learned scale) from the pre-trained backbone; with every
    # backbone layer frozen its parameters and BatchNorm statistics stay those of the pre-training
    main(["train", *d, "--way", "2", "--query", "2", "--steps", "3", "--val-episodes", "0",
          "--quiet", "--init", str(tree / "full" / "best.pt"), "--freeze", "*", "--option",
          "distance=cosine", "--option", "learn_scale=true", "--lr", "0.1",
          "--out", str(tree / "mb")])
    mb, spec, _ = load_learner(tree / "mb" / "last.pt")
    assert spec.options == {"distance": "cosine", "hidden": None, "scale": None, "learn_scale": True,
                            "rotation_weight": 0.0, "step_norm": False, "refine": "none",
                            "refine_steps": 1, "distractor_radius": 100.0, "learn_radius": True}
    trained, pretrained = mb.backbone.state_dict(), learner.backbone.state_dict()
    assert trained.keys() == pretrained.keys()
    assert all(torch.equal(trained[k], pretrained[k]) for k in trained
               if not k.endswith("num_batches_tracked"))
    assert float(mb.scale.detach()) != 10.0
