"""Our FixMatch against USB's (``semilearn``) on identical inputs: the loss and its parts, the
gradients, and whole training steps, from the same weights on the same batches; the benchmark
script at its smallest. The USB tests run where ``semilearn`` imports (its own environment:
``benchmarks/usb_fixmatch.py``) and are skipped elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from episodes import (
    SemiSupervisedBatch,
    SemiSupervisedSampler,
    TensorClassDataset,
    labelled_index,
    subset_items,
    unlabelled_pool,
)
from fewshot import build_learner, make_spec
from fewshot.engine.train import TrainConfig, train

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import peer_usb  # noqa: E402
import usb_fixmatch  # noqa: E402

needs_usb = pytest.mark.skipif(not peer_usb.usb_available(),
                               reason="semilearn is not importable in this environment")
SIZE, CLASSES = 16, 5


def learner(**options: object):
    torch.manual_seed(0)
    spec = make_spec("fixmatch", "conv4", 3, SIZE, {"num_classes": CLASSES, "hidden": 8,
                                                    "mu": 2, **options})
    return spec, build_learner(spec)


def batch() -> SemiSupervisedBatch:
    g = torch.Generator().manual_seed(1)
    return SemiSupervisedBatch(torch.rand(6, 3, SIZE, SIZE, generator=g),
                               torch.arange(6) % CLASSES,
                               torch.rand(2, 12, 3, SIZE, SIZE, generator=g))


def test_usb_net_returns_what_usb_algorithms_read() -> None:
    _, ours = learner()
    net = peer_usb.USBNet(ours.backbone, ours.classifier)
    x = batch().images
    out = net(x)
    assert set(out) == {"logits", "feat"}
    assert torch.equal(out["logits"], ours.logits(x))
    assert torch.equal(net(x, only_feat=True), out["feat"])
    assert torch.equal(net(out["feat"], only_fc=True), out["logits"])


@needs_usb
@pytest.mark.parametrize("hard", [True, False])
def test_loss_and_gradients_equal_usb(hard: bool) -> None:
    """One identical batch, fixed weights: total, labelled and unlabelled losses, the mask and
    every gradient agree. The classifier is scaled and the threshold set at the median
    confidence, so that half the unlabelled images pass the mask (a mask of all zeros or ones
    would not test it). Soft targets at T 1: USB's ``hard_label=False`` uses the weak view's
    probabilities without its ``T`` (our ``T`` sharpens them)."""
    _, ours = learner(hard_label=hard, T=1.0)
    ours.classifier.weight.data *= 40
    b = batch()
    ours.train()
    with torch.no_grad():
        weak = ours.labelled_and_views(b)[1][0].softmax(-1).max(-1).values
    ours.threshold = float(weak.median())
    args = peer_usb.usb_config(CLASSES, 1, 6, 2, p_cutoff=ours.threshold, hard_label=hard, T=1.0)
    alg = peer_usb.build_usb_fixmatch(ours.backbone, ours.classifier, args)
    alg.model.train()
    loss, _, metrics = ours.semi_loss(b)
    out, log = alg.train_step(b.images, b.labels, b.views[0], b.views[1])
    assert 0 < float(metrics["mask"]) < 1
    assert float(metrics["unsup_loss"]) > 0
    torch.testing.assert_close(out["loss"], loss, rtol=1e-6, atol=1e-7)
    for key, usb_key in [("sup_loss", "sup_loss"), ("unsup_loss", "unsup_loss"),
                         ("mask", "util_ratio")]:
        assert float(metrics[key]) == pytest.approx(log[f"train/{usb_key}"], rel=1e-6, abs=1e-7)
    loss.backward()
    out["loss"].backward()
    usb_params = dict(alg.model.named_parameters())
    for name, p in [*(("backbone." + n, p) for n, p in ours.backbone.named_parameters()),
                    *(("classifier." + n, p) for n, p in ours.classifier.named_parameters())]:
        torch.testing.assert_close(usb_params[name].grad, p.grad, rtol=1e-5, atol=1e-6)


@needs_usb
def test_usb_steps_with_our_optimiser_follow_our_training() -> None:
    """Three steps of ``fewshot.train`` and three of USB's ``train_step`` with its parameter
    update and EMA hooks, our optimiser and schedule, from the same weights on the same batches
    (two samplers of the same seed): the same weights after. USB's EMA model after one step."""
    g = torch.Generator().manual_seed(0)
    ds = TensorClassDataset(torch.randint(0, 256, (60, 3, SIZE, SIZE), generator=g,
                                          dtype=torch.uint8), torch.arange(60) % CLASSES,
                            [f"c{i}" for i in range(CLASSES)])
    index = labelled_index(ds, per_class=3)

    def sampler(mu: int, views):
        return SemiSupervisedSampler(subset_items(ds, index), unlabelled_pool(ds, index), 4, mu,
                                     0, *views)

    spec, ours = learner()
    config = TrainConfig(steps=3, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                         schedule="cosine", precision="fp32", channels_last=False,
                         progress=False)
    alg = peer_usb.build_usb_fixmatch(ours.backbone, ours.classifier,
                                      peer_usb.usb_config(CLASSES, 3, 4, ours.mu))
    start = {n: p.detach().clone() for n, p in alg.model.named_parameters()}
    peer_usb.use_our_optimizer(alg, config)
    peer_usb.start(alg)
    usb_sampler = sampler(ours.mu, ours.view_augments())
    for _ in range(3):
        peer_usb.usb_step(alg, usb_sampler.sample())
    train(ours, spec, sampler(ours.mu, ours.view_augments()), config)
    usb_params = dict(alg.model.named_parameters())
    for name, p in ours.backbone.named_parameters():
        torch.testing.assert_close(usb_params["backbone." + name], p, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(p, start[n]) for n, p in usb_params.items())
    # USB's EMA model after its first step: 0.001 of the new weights, 0.999 of the start
    fresh = learner()[1]
    alg1 = peer_usb.build_usb_fixmatch(fresh.backbone, fresh.classifier,
                                       peer_usb.usb_config(CLASSES, 1, 4, ours.mu))
    peer_usb.start(alg1)
    p0 = {n: p.detach().clone() for n, p in alg1.model.named_parameters()}
    peer_usb.usb_step(alg1, sampler(ours.mu, ours.view_augments()).sample())
    ema = dict(alg1.ema_model.named_parameters())
    for name, p in alg1.model.named_parameters():
        assert not torch.equal(p, p0[name])
        torch.testing.assert_close(ema[name], 0.001 * p.detach() + 0.999 * p0[name])


def test_the_script_refuses_an_interpreter_without_semilearn(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture
                                                              ) -> None:
    with pytest.raises(SystemExit) as stop:
        usb_fixmatch.main(["--quick", "--arms", "usb", "--usb-python", "/bin/false",
                           "--out-dir", str(tmp_path)])
    assert stop.value.code == 2
    assert "cannot import semilearn" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
