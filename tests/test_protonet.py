"""ProtoNet against hand-computed values, and the confidence interval against a hand calculation."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from fewshot import ModelSpec, build_learner, confidence_interval, paired_test, protonet_logits
from fewshot.engine.evaluate import EvalResult
from fewshot.methods.protonet import cosine_logits, prototypes


def test_protonet_logits_hand_computed():
    # 2-way 2-shot, 2-d features. Prototypes: class 0 = mean((0,0),(2,0)) = (1,0);
    # class 1 = mean((0,2),(0,4)) = (0,3).
    support = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 4.0]]])
    support_y = torch.tensor([[0, 1, 0, 1]])
    query = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    assert torch.allclose(prototypes(support, support_y, 2), torch.tensor([[[1.0, 0.0], [0.0, 3.0]]]))
    # q1=(1,1): d0 = 0+1 = 1, d1 = 1+4 = 5; q2=(3,3): d0 = 4+9 = 13, d1 = 9+0 = 9
    expected = -torch.tensor([[[1.0, 5.0], [13.0, 9.0]]])
    assert torch.allclose(protonet_logits(support, support_y, query, 2), expected)
    # cosine: q1 vs (1,0): 1/sqrt2, vs (0,1): 1/sqrt2 (scaled by 10)
    cos = cosine_logits(query, prototypes(support, support_y, 2))
    assert torch.allclose(cos[0, 0], torch.full((2,), 10 / math.sqrt(2)))


def test_protonet_batched_equals_per_episode():
    torch.manual_seed(0)
    s, q = torch.randn(3, 10, 7), torch.randn(3, 6, 7)
    sy = torch.arange(5).repeat_interleave(2).expand(3, -1)
    batched = protonet_logits(s, sy, q, 5)
    for t in range(3):
        assert torch.allclose(batched[t:t + 1], protonet_logits(s[t:t + 1], sy[t:t + 1], q[t:t + 1], 5),
                              atol=1e-5)


def test_protonet_module_shapes_and_support_permutation():
    torch.manual_seed(0)
    learner = build_learner(ModelSpec("protonet", "conv4", 1, 28)).eval()
    sx, qx = torch.rand(2, 15, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
    sy = torch.arange(5).repeat_interleave(3).expand(2, -1)
    with torch.no_grad():
        out = learner(sx, sy, qx, 5)
        perm = torch.randperm(15)
        out_perm = learner(sx[:, perm], sy[:, perm], qx, 5)
    assert out.shape == (2, 10, 5)
    assert torch.allclose(out, out_perm, atol=1e-3, rtol=1e-5)


def test_confidence_interval_hand_calculation():
    acc = torch.tensor([0.5, 0.7, 0.9, 0.6, 0.8], dtype=torch.float64)
    # mean 0.7; squared deviations 0.04 0 0.04 0.01 0.01 -> sum 0.1; sample var 0.1/4 = 0.025
    expected = 1.96 * math.sqrt(0.025) / math.sqrt(5)
    assert confidence_interval(acc) == pytest.approx(expected, rel=1e-9)
    res = EvalResult(acc, 5, 1, 15)
    assert res.mean == pytest.approx(0.7) and res.ci95 == pytest.approx(expected)
    assert "70.00 +- " in str(res)


def test_paired_test():
    a = EvalResult(torch.tensor([0.8, 0.9, 0.7, 0.85, 0.95, 0.9]), 5, 1, 15)
    b = EvalResult(torch.tensor([0.6, 0.7, 0.6, 0.65, 0.7, 0.8]), 5, 1, 15)
    out = paired_test(a, b)
    assert out["mean_diff"] == pytest.approx(0.175) and out["t_test_p"] < 0.01
    same = paired_test(a, a)
    assert same["mean_diff"] == 0 and math.isnan(same["wilcoxon_p"])


def test_paired_test_p_values_do_not_underflow():
    """1,000 episodes 18 standard errors apart: p about 4e-66 (t) and 3e-60 (Wilcoxon), which
    float32 accuracies once rounded to 0; computed in float64 they match scipy's own."""
    g = torch.Generator().manual_seed(0)
    b = torch.rand(1000, generator=g)
    a = b + 0.04 + 0.07 * torch.randn(1000, generator=g)
    out = paired_test(EvalResult(a, 5, 1, 15), EvalResult(b, 5, 1, 15))
    x, y = a.double().numpy(), b.double().numpy()
    assert 0 < out["t_test_p"] < 1e-38 and 0 < out["wilcoxon_p"] < 1e-38
    assert out["t_test_p"] == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-9)
    assert out["wilcoxon_p"] == pytest.approx(stats.wilcoxon(x, y).pvalue, rel=1e-9)


def test_meta_baseline_step_norm_normalises_the_step_as_one_batch(tiny_dataset):
    """``step_norm=true``: the authors' Meta-Baseline encoder takes all the step's images as one
    batch (BatchNorm statistics of the whole step); by default each episode has its own. A step
    normalised together is not split into chunks."""
    from episodes import EpisodeSampler
    from fewshot import TrainConfig, make_spec, train
    from fewshot.models.learner import embed_episode

    data = tiny_dataset(num_classes=6, per_class=8, size=16)
    options = {"distance": "cosine", "learn_scale": True, "hidden": 8}
    ep = EpisodeSampler(data, 3, 1, 2, episodes_per_batch=4, seed=0).sample()
    losses = {}
    for step_norm in (False, True):
        torch.manual_seed(0)
        learner = build_learner(make_spec("protonet", "conv4", 1, 16,
                                          {**options, "step_norm": step_norm})).train()
        losses[step_norm] = learner.batch_loss(ep)[0]
    s, q = embed_episode(learner.backbone, ep.support_x, ep.query_x)  # plain BatchNorm
    whole = learner.loss(learner.head(s, ep.support_y, q, 3), ep.query_y)
    torch.testing.assert_close(losses[True], whole)
    assert not torch.allclose(losses[False], whole)
    spec = make_spec("protonet", "conv4", 1, 16, {**options, "step_norm": True})
    with pytest.raises(ValueError, match="normalises a step's 4 episodes together"):
        train(build_learner(spec), spec, EpisodeSampler(data, 3, 1, 2, episodes_per_batch=4),
              TrainConfig(steps=1, episodes_per_forward=2, progress=False))
