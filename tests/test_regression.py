"""MAML for regression: sine-wave tasks, the mean-squared-error inner loop against a plain autograd
loop, and a regression MAML trained by the one training loop (notebook 05's first part)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from episodes import EpisodeSampler, SineTasks, sine_episode
from fewshot import TrainConfig, train
from fewshot.methods.maml import MAML, TaskConfig, maml_logits
from fewshot.methods.maml.functional import mse_loss


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(1, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 1))


def test_sine_tasks_shapes_targets_seeds_and_resume():
    tasks = SineTasks(k_shot=4, q_query=6, episodes_per_batch=3, seed=1)
    ep = tasks.sample()
    assert ep.support_x.shape == (3, 4, 1) and ep.query_x.shape == (3, 6, 1)
    assert ep.support_y.shape == (3, 4) and ep.query_y.shape == (3, 6)
    assert (ep.n_way, ep.k_shot, ep.q_query) == (1, 4, 6)
    assert ep.support_y.is_floating_point() and ep.support_x.abs().max() <= 5
    assert ep.query_y.abs().max() <= 5
    again = SineTasks(k_shot=4, q_query=6, episodes_per_batch=3, seed=1).sample()
    assert torch.equal(ep.query_y, again.query_y)
    state = tasks.state_dict()
    following = tasks.sample()
    tasks.load_state_dict(state)
    assert torch.equal(tasks.sample().support_x, following.support_x)
    with pytest.raises(ValueError, match="k_shot"):
        SineTasks(k_shot=0)


def test_sine_episode_is_the_sine_wave():
    x = torch.tensor([[0.0, math.pi / 2]])
    ep = sine_episode(torch.tensor([2.0]), torch.tensor([math.pi / 2]), x, x)
    torch.testing.assert_close(ep.support_y, torch.tensor([[-2.0, 0.0]]))


@pytest.mark.parametrize("first_order", [False, True])
def test_mse_meta_gradient_matches_a_plain_autograd_loop(f64, first_order):
    torch.manual_seed(0)
    net, lr, steps = mlp(), 0.05, 2
    ep = SineTasks(k_shot=5, q_query=7, episodes_per_batch=3, seed=0).sample()  # float64 here
    pred = maml_logits(net, dict(net.named_parameters()), lr, ep.support_x, ep.support_y,
                       ep.query_x, TaskConfig(steps, first_order, loss_fn=mse_loss))
    assert pred.shape == (3, 7, 1)
    got = torch.autograd.grad(F.mse_loss(pred.squeeze(-1), ep.query_y), list(net.parameters()))
    names, weights = zip(*net.named_parameters(), strict=True)
    total = 0.0
    for t in range(3):  # the reference: one task at a time, plain autograd
        fast = list(weights)
        for _ in range(steps):
            out = torch.func.functional_call(net, dict(zip(names, fast, strict=True)),
                                             (ep.support_x[t],))
            g = torch.autograd.grad(F.mse_loss(out[:, 0], ep.support_y[t]), fast,
                                    create_graph=not first_order)
            fast = [w - lr * gw for w, gw in zip(fast, g, strict=True)]
        out = torch.func.functional_call(net, dict(zip(names, fast, strict=True)), (ep.query_x[t],))
        total = total + F.mse_loss(out[:, 0], ep.query_y[t]) / 3
    expected = torch.autograd.grad(total, list(weights))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_regression_maml_trains_in_the_one_loop():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU())
    learner = MAML(body, 40, n_way=1, inner_steps=1, inner_lr=0.01, loss="mse", use_vmap=True)
    test = SineTasks(k_shot=10, q_query=20, episodes_per_batch=50, seed=9).sample()

    def test_mse() -> float:
        learner.eval()
        pred = learner.infer(test.support_x, test.support_y, test.query_x, 1)
        return float(mse_loss(pred.flatten(0, 1), test.query_y.flatten()))

    before = test_mse()
    result = train(learner, None, SineTasks(episodes_per_batch=10, seed=0),
                   TrainConfig(steps=200, lr=3e-3, progress=False))
    after = test_mse()
    assert result.steps == 200 and after < 0.7 * before, (before, after)
    assert result.history and all("acc" not in r and math.isfinite(r["loss"])
                                  for r in result.history)
    with pytest.raises(ValueError, match="checkpoints need the learner's ModelSpec"):
        train(learner, None, SineTasks(), TrainConfig(steps=1, checkpoint_dir="unused"))


def test_regression_maml_refuses_class_labels(tiny_dataset):
    learner = MAML(nn.Flatten(), 64, n_way=2, loss="mse")
    ep = EpisodeSampler(tiny_dataset(), 2, 1, 1, seed=0).sample()
    with pytest.raises(ValueError, match="loss='mse' regresses float targets"):
        learner(ep.support_x, ep.support_y, ep.query_x, 2)
    with pytest.raises(ValueError, match="loss must be one of"):
        MAML(nn.Flatten(), 64, loss="hinge")
