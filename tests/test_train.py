"""The training loop: learning, resuming, checkpoints."""

from __future__ import annotations

import pytest
import torch

from episodes import EpisodeSampler, FixedEpisodes
from fewshot import ModelSpec, TrainConfig, build_learner, evaluate, load_learner, train
from fewshot.engine.checkpoint import load_checkpoint, restore_model


def run(ds, steps, ckdir=None, resume=False, val=None, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec("protonet", "conv4", 1, 16)
    learner = build_learner(spec)
    sampler = EpisodeSampler(ds, 4, 1, 2, episodes_per_batch=2, seed=seed)
    cfg = TrainConfig(steps=steps, lr=1e-3, lr_decay_every=3, checkpoint_dir=ckdir,
                      checkpoint_every=4, resume=resume, progress=False, val_every=5)
    return learner, train(learner, spec, sampler, cfg, val=val)


def test_resume_matches_uninterrupted_run(tiny_dataset, tmp_path):
    ds = tiny_dataset(size=16)
    val = (ds, FixedEpisodes.generate(ds, 4, 1, 2, 6, seed=5))
    full, _ = run(ds, 12, tmp_path / "full", val=val)
    run(ds, 8, tmp_path / "part", val=val)            # "killed" after step 8 (checkpoint at 8)
    resumed, result = run(ds, 12, tmp_path / "part", resume=True, val=val, seed=123)
    assert result.steps == 12
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ck = load_checkpoint(tmp_path / "part" / "last.pt")
    assert ck["step"] == 12 and (tmp_path / "part" / "best.pt").is_file()
    assert not list((tmp_path / "part").glob("*.tmp"))


def test_training_lowers_loss_and_beats_chance(tiny_dataset):
    ds = tiny_dataset(12, 8, size=16)
    fe = FixedEpisodes.generate(ds, 4, 1, 2, 40, seed=1)
    torch.manual_seed(0)
    spec = ModelSpec("protonet", "conv4", 1, 16)
    learner = build_learner(spec)
    before = evaluate(learner, fe, ds).mean
    res = train(learner, spec, EpisodeSampler(ds, 4, 1, 2, episodes_per_batch=4, seed=0),
                TrainConfig(steps=60, lr=3e-3, progress=False))
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert losses[-1] < losses[0]
    assert evaluate(learner, fe, ds).mean > max(before, 0.5)


def test_checkpoint_of_another_model_is_refused(tiny_dataset, tmp_path):
    ds = tiny_dataset(size=16)
    run(ds, 4, tmp_path / "a")
    other = build_learner(ModelSpec("protonet", "resnet12", 1, 16))
    ck = load_checkpoint(tmp_path / "a" / "last.pt")
    with pytest.raises(ValueError, match="does not fit this model"):
        restore_model(other, ck)
    with pytest.raises(ValueError, match="another model"):
        restore_model(other, ck, ModelSpec("protonet", "resnet12", 1, 16))
    learner, spec, _ = load_learner(tmp_path / "a" / "last.pt")
    assert spec.backbone == "conv4"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_learner(tmp_path / "junk.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fewshot checkpoint"):
        load_learner(tmp_path / "other.pt")
