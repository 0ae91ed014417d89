"""Heads fitted per episode on a frozen backbone (fewshot.heads): reference solvers, hand-checked
cases, batched = separate, the backbone never changes, two-stage order and learning rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq, minimize

from episodes import FixedEpisodes, TensorClassDataset
from fewshot.engine.evaluate import evaluate
from fewshot.heads import HEADS, CosineHead, HeadLearner, LinearHead, head_config, registered
from fewshot.heads.finetune import finetune_logits
from fewshot.heads.functional import cosine_classifier_logits, knn_logits
from fewshot.heads.logistic import fit_logistic, logistic_objective
from fewshot.heads.scoring import evaluate_head
from fewshot.methods.protonet import euclidean_logits, prototypes
from fewshot.models.backbones import Conv4

FAST = {"linear": {"epochs": 5}, "cosine": {"epochs": 5}, "finetune": {"steps": 2},
        "two-stage": {"steps": 2, "head_steps": 2}}


def episode(t: int = 2, n: int = 3, k: int = 2, q: int = 2, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(t, n * k, 1, size, size, generator=g)
    qx = torch.rand(t, n * q, 1, size, size, generator=g)
    return sx, torch.arange(n).repeat_interleave(k).expand(t, -1).contiguous(), qx


def test_logistic_matches_scipy():
    """The batched L-BFGS fit equals scipy's L-BFGS-B on each episode's objective alone."""
    g = torch.Generator().manual_seed(1)
    t, n, k, d = 3, 4, 2, 6
    x = F.normalize(torch.randn(t, n * k, d, generator=g, dtype=torch.float64), dim=-1)
    y = torch.arange(n).repeat_interleave(k).expand(t, -1).contiguous()
    weight, bias = fit_logistic(x, y, n, C=0.7, tol=1e-10)
    for i in range(t):
        def f(theta: np.ndarray, i: int = i) -> tuple[float, np.ndarray]:
            th = torch.tensor(theta, requires_grad=True)
            v = logistic_objective(th[:n * d].view(1, n, d), th[n * d:].view(1, n), x[i:i + 1],
                                   y[i:i + 1], 0.7).sum()
            v.backward()
            return v.item(), th.grad.numpy()
        ref = minimize(f, np.zeros(n * d + n), jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 10000}).x
        np.testing.assert_allclose(weight[i].numpy(), ref[:n * d].reshape(n, d), atol=1e-6)
        b = ref[n * d:]
        np.testing.assert_allclose(bias[i].numpy() - bias[i].numpy().mean(), b - b.mean(),
                                   atol=1e-6)


def test_logistic_hand_checked():
    """Two classes at +1 and -1 (D = 1, C = 1): by symmetry b = 0 and W = (w, -w), and the
    objective log(1 + exp(-2w)) + w^2 / 2 is stationary where w = 2 / (1 + exp(2w))."""
    x = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    weight, bias = fit_logistic(x, torch.tensor([[0, 1]]), 2, C=1.0, tol=1e-12)
    w = brentq(lambda w: w - 2 / (1 + math.exp(2 * w)), 0, 2)
    assert weight.flatten().tolist() == pytest.approx([w, -w], abs=1e-8)
    assert bias.flatten().tolist() == pytest.approx([0, 0], abs=1e-8)


def test_linear_head_batched_equals_one_episode_at_a_time():
    """T episodes fitted together equal each fitted alone by a plain nn.Linear + SGD loop
    (full-batch steps, the same initial weights)."""
    g = torch.Generator().manual_seed(2)
    t, n, d = 3, 4, 5
    s, q = torch.randn(t, n * 2, d, generator=g), torch.randn(t, 3, d, generator=g)
    y = torch.arange(n).repeat_interleave(2).expand(t, -1).contiguous()
    config = LinearHead(epochs=30, batch_size=0, seed=5)
    batched = registered("linear").logits(s, y, q, n, config)
    init = torch.Generator().manual_seed(5)
    bound = 1 / math.sqrt(d)
    w0 = (torch.rand(t, n, d, generator=init, dtype=torch.float64) * 2 - 1) * bound
    b0 = (torch.rand(t, n, generator=init, dtype=torch.float64) * 2 - 1) * bound
    for i in range(t):
        lin = torch.nn.Linear(d, n)
        with torch.no_grad():
            lin.weight.copy_(w0[i])
            lin.bias.copy_(b0[i])
        opt = torch.optim.SGD(lin.parameters(), lr=0.01, momentum=0.9, dampening=0.9,
                              weight_decay=0.001)
        for _ in range(30):
            opt.zero_grad()
            F.cross_entropy(lin(s[i]), y[i]).backward()
            opt.step()
        torch.testing.assert_close(batched[i], lin(q[i]).detach(), rtol=1e-5, atol=1e-5)


def test_cosine_classifier_by_hand():
    x = torch.tensor([[[3.0, 4.0]]])
    direction = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    norm = torch.tensor([[2.0, 0.5]])
    out = cosine_classifier_logits(x, direction, norm, scale=2.0)
    assert out.flatten().tolist() == pytest.approx([2 * 0.6 * 2.0, 2 * 0.8 * 0.5])
    cfg = CosineHead(epochs=3)
    assert cfg.scale == 2.0 and cfg.learn_norm


def test_knn_by_hand():
    support = torch.tensor([[[0.0], [1.0], [5.0], [6.0], [6.5]]])
    labels = torch.tensor([[0, 0, 1, 1, 0]])
    query = torch.tensor([[[0.8], [5.2], [6.4]]])
    nearest = knn_logits(support, labels, query, 2, k=1)
    assert nearest.argmax(-1).tolist() == [[0, 1, 0]]  # 6.4 is nearest to 6.5 (class 0)
    assert nearest[0, 0].tolist() == pytest.approx([-(0.2 ** 2), -(4.2 ** 2)])
    assert knn_logits(support, labels, query, 2, k=3).argmax(-1).tolist() == [[0, 1, 1]]
    with pytest.raises(ValueError, match="option k must be between 1 and the 5"):
        knn_logits(support, labels, query, 2, k=6)


@pytest.mark.parametrize("head", list(HEADS))
def test_backbone_bit_identical_through_fitting(head: str):
    torch.manual_seed(0)
    backbone = Conv4(1)
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    learner = HeadLearner(backbone, head, head_config(head, FAST.get(head, {})), chunk_size=5)
    sx, sy, qx = episode()
    logits = learner.infer(sx, sy, qx, 3)
    assert logits.shape == (2, 6, 3) and torch.isfinite(logits).all()
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert backbone.training and all(p.grad is None for p in backbone.parameters())


def test_two_stage_order_and_learning_rates():
    torch.manual_seed(0)
    backbone = Conv4(1)
    seen: list[tuple[str, int, list[float], int]] = []
    config = head_config("two-stage", {"head_steps": 3, "head_lr": 0.05, "steps": 2, "lr": 0.002,
                                       "layers": "blocks.3"})
    sx, sy, qx = episode(t=1)
    finetune_logits(backbone, sx, sy, qx, 3, config,
                    on_step=lambda stage, step, opt: seen.append(
                        (stage, step, [g["lr"] for g in opt.param_groups],
                         sum(len(g["params"]) for g in opt.param_groups))))
    tuned = sum(1 for n, _ in backbone.named_parameters() if n.startswith("blocks.3."))
    assert seen == [("head", 0, [0.05], 2), ("head", 1, [0.05], 2), ("head", 2, [0.05], 2),
                    ("backbone", 0, [0.002], 2 + tuned), ("backbone", 1, [0.002], 2 + tuned)]


def test_finetune_without_steps_is_the_prototype_classifier():
    """A prototype-initialised head before any step scores -|q - c|^2 + |q|^2: ProtoNet's logits
    shifted per query."""
    torch.manual_seed(0)
    backbone = Conv4(1)
    sx, sy, qx = episode()
    config = head_config("finetune", {"steps": 0, "head_init": "prototype"})
    out = finetune_logits(backbone, sx, sy, qx, 3, config)
    backbone.eval()
    with torch.no_grad():
        s, q = backbone(sx.flatten(0, 1)).view(2, 6, -1), backbone(qx.flatten(0, 1)).view(2, 6, -1)
    expected = euclidean_logits(q, prototypes(s, sy, 3)) + q.pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-3)


def test_finetune_batched_equals_one_episode_at_a_time():
    torch.manual_seed(0)
    backbone = Conv4(1)
    sx, sy, qx = episode(t=3)
    options = {"steps": 3, "head_init": "zero", "optimizer": "adam", "lr": 0.01}
    alone = finetune_logits(backbone, sx, sy, qx, 3,
                            head_config("finetune", {**options, "episodes_per_chunk": 1}))
    for vmap in (True, False):  # vmap over the episodes' copies, or one after another
        together = finetune_logits(backbone, sx, sy, qx, 3, head_config(
            "finetune", {**options, "episodes_per_chunk": 3, "vmap": vmap}))
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_head_options_are_typed():
    with pytest.raises(ValueError, match="unknown head 'svm': choose one of prototype, linear"):
        head_config("svm")
    with pytest.raises(ValueError, match=r"unknown head logistic option\(s\) c: .* C, normalize"):
        head_config("logistic", {"c": "1"})
    with pytest.raises(ValueError, match="option layers 'nope' matches no layer of the backbone: "
                                         "its layers are blocks.0"):
        finetune_logits(Conv4(1), *episode(), 3, head_config("finetune", {"layers": "nope"}))
    assert head_config("two-stage", {"lr": "1e-4"}).lr == 1e-4


def test_protonet_scored_as_its_prototype_head():
    """ProtoNet's (and Meta-Baseline's: cosine, learned positive scale) own forward and the
    prototype head on its backbone give the same accuracies on the same episodes."""
    from fewshot import build_learner, make_spec
    from fewshot.heads import PrototypeHead

    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (40, 1, 16, 16), generator=g, dtype=torch.uint8)
    ds = TensorClassDataset(images, torch.arange(5).repeat_interleave(8),
                            [f"c{i}" for i in range(5)])
    episodes = FixedEpisodes.generate(ds, 3, 2, 3, 9, seed=1)
    for options in ({}, {"distance": "cosine", "learn_scale": True}):
        torch.manual_seed(0)
        learner = build_learner(make_spec("protonet", "conv4", 1, 16, options))
        own = evaluate(learner, episodes, ds, batch_size=4)
        head = evaluate_head(learner.backbone, "prototype", PrototypeHead(learner.distance),
                             episodes, ds, batch_size=4)
        assert torch.equal(own.accuracies, head.accuracies), options


def test_features_once_equals_images_per_episode():
    """evaluate_head (each image's features once) gives evaluate(HeadLearner)'s accuracies."""
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (40, 1, 16, 16), generator=g, dtype=torch.uint8)
    ds = TensorClassDataset(images, torch.arange(5).repeat_interleave(8),
                            [f"c{i}" for i in range(5)])
    episodes = FixedEpisodes.generate(ds, 3, 2, 3, 7, seed=0)
    torch.manual_seed(0)
    backbone = Conv4(1)
    for head in ("logistic", "knn", "linear"):
        config = head_config(head, FAST.get(head, {}))
        fast = evaluate_head(backbone, head, config, episodes, ds, batch_size=3, chunk_size=11)
        slow = evaluate(HeadLearner(backbone, head, config), episodes, ds, batch_size=3)
        assert torch.equal(fast.accuracies, slow.accuracies), head
