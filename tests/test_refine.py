"""Prototype refinement with unlabelled features (fewshot.refine): hand-computed 2-D examples and
direct loop implementations."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot.refine import (
    PrototypeRefiner,
    distance_statistics,
    distractor_kmeans,
    mask_mlp,
    masked_kmeans,
    radius_logits,
    soft_kmeans,
)
from fewshot.registry import build_learner, make_spec, method_config


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).unsqueeze(0)


def test_one_soft_kmeans_step_by_hand():
    # classes at (0, 0) and (2, 0); u1 = (1, 0) is equidistant (weights 1/2, 1/2),
    # u2 = (0, 0) has squared distances 0 and 4: weights a, 1 - a with a = 1 / (1 + e^-4)
    support, support_y = t([[0, 0], [2, 0]]), torch.tensor([[0, 1]])
    unlabelled = t([[1, 0], [0, 0]])
    a = 1 / (1 + math.exp(-4))
    expected = t([[0.5 / (1.5 + a), 0], [2.5 / (2.5 - a), 0]])
    got = soft_kmeans(support, support_y, unlabelled, 2, steps=1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(soft_kmeans(support, support_y, unlabelled, 2, steps=0), support)


def test_distractor_step_by_hand():
    # classes at (2, 0) and (0, 2), distractor at the origin with radius 2; u = (1, 1) is at
    # squared distance 2 from all three: class logits -2/2 - log 1, distractor -2/8 - log 2
    support, support_y, unlabelled = t([[2, 0], [0, 2]]), torch.tensor([[0, 1]]), t([[1, 1]])
    w = torch.tensor([-1.0, -1.0, -0.25 - math.log(2)], dtype=torch.float64).softmax(0)
    centres, radii = distractor_kmeans(support, support_y, unlabelled, 2, 1,
                                       torch.tensor(2.0, dtype=torch.float64))
    expected = t([[(2 + w[0]) / (1 + w[0]), w[0] / (1 + w[0])],
                  [w[1] / (1 + w[1]), (2 + w[1]) / (1 + w[1])], [1, 1]])
    torch.testing.assert_close(centres, expected)
    torch.testing.assert_close(radii, torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))
    # a Gaussian log-density: at distance 0 from a radius-2 centre, -log 2 - log(2 pi) / 2
    logit = radius_logits(t([[0, 0]]), t([[0, 0]]), torch.tensor([2.0], dtype=torch.float64))
    assert float(logit) == pytest.approx(-math.log(2) - 0.5 * math.log(2 * math.pi))


def loop_soft_kmeans(support, support_y, unlabelled, n_way, steps, weight_fn=None):
    """One episode, one class and one image at a time, straight from the paper's equations."""
    out = []
    for e in range(len(support)):
        protos = [support[e][support_y[e] == c].mean(0) for c in range(n_way)]
        for i in range(steps):
            d = [[float(((u - p) ** 2).sum()) for p in protos] for u in unlabelled[e]]
            weights = [torch.tensor([-x for x in row]).softmax(0).tolist() for row in d]
            if weight_fn is not None:
                weights = weight_fn(e, i, d, weights)
            new = []
            for c in range(n_way):
                num = support[e][support_y[e] == c].sum(0)
                den = float((support_y[e] == c).sum())
                for j, u in enumerate(unlabelled[e]):
                    num = num + weights[j][c] * u
                    den += weights[j][c]
                new.append(num / den)
            protos = new
        out.append(torch.stack(protos))
    return torch.stack(out)


def episode_features(seed: int = 0, t_: int = 3, n: int = 3, k: int = 2, u: int = 5, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(t_, n * k, d, generator=g, dtype=torch.float64)
    support_y = torch.arange(n).repeat_interleave(k).expand(t_, -1)
    return support, support_y, torch.randn(t_, u, d, generator=g, dtype=torch.float64)


def test_soft_kmeans_matches_a_loop_over_episodes_classes_and_images():
    support, support_y, unlabelled = episode_features()
    torch.testing.assert_close(soft_kmeans(support, support_y, unlabelled, 3, steps=3),
                               loop_soft_kmeans(support, support_y, unlabelled, 3, 3))


def test_masked_kmeans_matches_a_loop(f64):
    support, support_y, unlabelled = episode_features(1)
    torch.manual_seed(0)
    mlp = mask_mlp()
    with torch.no_grad():  # larger weights than the init's, so the masks differ between classes
        for p in mlp.parameters():
            p.mul_(50)
    steps, n = 3, 3
    stats = []
    for e in range(len(support)):  # the distance statistics, one class at a time
        protos = [support[e][support_y[e] == c].mean(0) for c in range(n)]
        rows = []
        for p in protos:
            d = torch.stack([((x - p) ** 2).sum() for x in unlabelled[e]])
            d = d / d.mean()
            m, v = d.mean(), ((d - d.mean()) ** 2).mean()
            rows.append(torch.stack([d.min(), d.max(), v, (((d - m) ** 3) / v ** 1.5).mean(),
                                     (((d - m) ** 4) / v ** 2 - 3).mean()]))
        stats.append(torch.stack(rows))
    stats = torch.stack(stats)
    torch.testing.assert_close(distance_statistics(
        torch.stack([torch.stack([support[e][support_y[e] == c].mean(0) for c in range(n)])
                     for e in range(len(support))]), unlabelled), stats)
    out = mlp(stats).detach()

    def masked(e, i, d, weights):
        mean_d = [sum(row[c] for row in d) / len(d) for c in range(n)]
        result = []
        for j, row in enumerate(d):
            result.append([])
            for c in range(n):
                bias = math.exp(out[e, c, 0]) + i / (steps - 1) * out[e, c, 1]
                z = (-row[c] / mean_d[c] + float(bias)) * math.exp(out[e, c, 2])
                result[-1].append(weights[j][c] / (1 + math.exp(-z)))
        return result

    torch.testing.assert_close(masked_kmeans(support, support_y, unlabelled, n, steps, mlp).detach(),
                               loop_soft_kmeans(support, support_y, unlabelled, n, steps, masked))


def test_refiner_logits_and_learned_parts():
    support, support_y, unlabelled = episode_features(2)
    support, unlabelled = support.float(), unlabelled.float()
    query = torch.randn(3, 4, 4)
    plain = PrototypeRefiner("soft-kmeans", 2)(support, support_y, query, unlabelled, 3)
    protos = soft_kmeans(support, support_y, unlabelled, 3, 2)
    torch.testing.assert_close(plain, -((query.unsqueeze(2) - protos.unsqueeze(1)) ** 2).sum(-1))
    distractor = PrototypeRefiner("distractor", 1)
    assert distractor.log_radius.requires_grad
    assert float(distractor.log_radius.detach().exp()) == pytest.approx(100)
    fixed = PrototypeRefiner("distractor", 1, init_radius=5.0, learn_radius=False)
    assert "log_radius" not in dict(fixed.named_parameters())
    logits = distractor(support, support_y, query, unlabelled, 3)
    assert logits.shape == (3, 4, 3)
    logits.sum().backward()
    assert distractor.log_radius.grad is not None
    masked = PrototypeRefiner("masked", 2)
    masked(support, support_y, query, unlabelled, 3).sum().backward()
    assert all(p.grad is not None for p in masked.mask.parameters())
    with pytest.raises(ValueError, match="refine must be one of"):
        PrototypeRefiner("none")


def test_protonet_refine_option_checked_and_trains_through_the_refinement(tiny_dataset):
    from episodes import EpisodeSampler
    with pytest.raises(ValueError, match="refine"):
        method_config("protonet", {"refine": "kmeans"})
    with pytest.raises(ValueError, match="Euclidean"):
        method_config("protonet", {"refine": "soft-kmeans", "distance": "cosine"})
    with pytest.raises(ValueError, match="refine_steps"):
        method_config("protonet", {"refine": "soft-kmeans", "refine_steps": 0})
    sampler = EpisodeSampler(tiny_dataset(size=16), 3, 1, 2, episodes_per_batch=2,
                             unlabelled_per_class=2, distractor_classes=1)
    batch = sampler.sample()
    torch.manual_seed(0)
    learner = build_learner(make_spec("protonet", "conv4", 1, 16, {"refine": "distractor"}))
    loss, _ = learner.batch_loss(batch)
    loss.backward()
    assert learner.refiner.log_radius.grad is not None and learner.refiner.log_radius.grad != 0
    # without unlabelled images in the batch: the plain prototypes, as ProtoNet
    torch.manual_seed(0)
    plain = build_learner(make_spec("protonet", "conv4", 1, 16))
    plain.load_state_dict({k: v for k, v in learner.state_dict().items()
                           if not k.startswith("refiner")})
    from dataclasses import replace
    torch.testing.assert_close(learner.batch_logits(replace(batch, unlabelled_x=None))[0],
                               plain.batch_logits(batch)[0])
