"""Per-step BatchNorm statistics (MAML++ BNRS): the running statistics against a plain-loop
reference, evaluation with each step's statistics, and the learner option end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot import ModelSpec, build_learner
from fewshot.methods.maml import MAML, StepStatistics, TaskConfig, bn_free_buffers, maml_logits

T, N, K, Q, LR, MOMENTUM = 3, 5, 2, 3, 0.4, 0.1


def tiny_net() -> nn.Sequential:
    """conv-BN-ReLU-pool twice on 1x8x8 images, then a 5-way head (BN layers at 1 and 5)."""
    def block(cin: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=MOMENTUM), nn.ReLU(),
                nn.MaxPool2d(2)]
    return nn.Sequential(*block(1), *block(4), nn.Flatten(), nn.Linear(16, N))


def reference_forward(w, x, norm):
    """The net as plain calls on a weight list; ``norm(i, h)`` normalises the input h of BN
    layer i (0 or 1) without affine."""
    for i in range(2):
        h = F.conv2d(x, w[4 * i], w[4 * i + 1], padding=1)
        h = norm(i, h) * w[4 * i + 2].view(1, -1, 1, 1) + w[4 * i + 3].view(1, -1, 1, 1)
        x = F.max_pool2d(F.relu(h), 2)
    return F.linear(x.flatten(1), w[8], w[9])


def batch_stat_norm(seen: list):
    def norm(i, h):
        mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), correction=0)
        seen.append((i, h.detach().mean((0, 2, 3)), h.detach().var((0, 2, 3), correction=1)))
        return (h - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
    return norm


def episode(t: int = T):
    g = torch.Generator().manual_seed(3)
    sx = torch.rand(t, N * K, 1, 8, 8, generator=g, dtype=torch.float64)
    qx = torch.rand(t, N * Q, 1, 8, 8, generator=g, dtype=torch.float64)
    sy = torch.arange(N).repeat_interleave(K).repeat(t, 1)
    return sx, sy, qx, torch.arange(N).repeat_interleave(Q).repeat(t, 1)


@pytest.mark.parametrize("how", [{"use_vmap": True}, {"use_vmap": False}, {"chunk_size": 2}])
def test_training_records_each_steps_batch_statistics_and_keeps_meta_gradients(f64, how):
    torch.manual_seed(0)
    net, steps = tiny_net(), 2
    stats = StepStatistics(net, steps + 1)
    assert stats.layers == ["1", "5"]
    sx, sy, qx, qy = episode()
    params = dict(net.named_parameters())
    logits = maml_logits(net, params, LR, sx, sy, qx, TaskConfig(steps), stats=stats, **how)
    loss = F.cross_entropy(logits.flatten(0, 1), qy.flatten())
    loss.backward()  # (chunked results support backward(), not autograd.grad)
    grads = [p.grad for p in params.values()]

    # reference: per task, a plain autograd inner loop; batch statistics of each BN input
    weights, expected = list(params.values()), {}
    ref_loss = 0.0
    for t in range(T):
        fast, seen = weights, []
        for k in range(steps):  # support forward with the parameters after k updates: set k
            n0 = len(seen)
            support = F.cross_entropy(reference_forward(fast, sx[t], batch_stat_norm(seen)), sy[t])
            expected.update({(i, k, t): (m, v) for i, m, v in seen[n0:]})
            g = torch.autograd.grad(support, fast, create_graph=True)
            fast = [w - LR * gi for w, gi in zip(fast, g, strict=True)]
        n0 = len(seen)
        ref_loss = ref_loss + F.cross_entropy(
            reference_forward(fast, qx[t], batch_stat_norm(seen)), qy[t]) / T
        expected.update({(i, steps, t): (m, v) for i, m, v in seen[n0:]})
    ref_grads = torch.autograd.grad(ref_loss, weights)
    for got, ref in zip(grads, ref_grads, strict=True):  # per-step training = transductive
        assert torch.allclose(got, ref, rtol=0, atol=1e-12)
    for i, layer in enumerate(stats.layers):
        for k in range(steps + 1):
            mean = torch.stack([expected[i, k, t][0] for t in range(T)]).mean(0)
            var = torch.stack([expected[i, k, t][1] for t in range(T)]).mean(0)
            assert torch.allclose(stats.stat("mean", layer)[k], MOMENTUM * mean, atol=1e-12)
            assert torch.allclose(stats.stat("var", layer)[k], 0.9 + MOMENTUM * var, atol=1e-12)
    assert all(torch.equal(b, torch.zeros_like(b)) for n, b in net.named_buffers()
               if n.endswith("running_mean"))  # the model's own buffers are untouched


@pytest.mark.parametrize("use_vmap", [True, False])
def test_evaluation_normalises_queries_with_their_steps_running_statistics_and_is_inductive(
        f64, use_vmap):
    """The inner loop keeps the support set's batch statistics (as in training: with fixed
    statistics its steps overshoot); each query forward uses the set of its step."""
    torch.manual_seed(0)
    net, train_steps, eval_steps = tiny_net(), 2, 4
    stats = StepStatistics(net, train_steps + 1)
    g = torch.Generator().manual_seed(5)
    for layer in stats.layers:  # distinct statistics per set
        stats.stat("mean", layer).copy_(torch.randn(3, 4, generator=g))
        stats.stat("var", layer).copy_(torch.rand(3, 4, generator=g) + 0.5)
    net.eval(), stats.eval()
    sx, sy, qx, _ = episode()
    params = {n: p.detach() for n, p in net.named_parameters()}
    logits = maml_logits(net, params, LR, sx, sy, qx, TaskConfig(eval_steps), stats=stats,
                         use_vmap=use_vmap)

    def running_norm(k):  # evaluation steps beyond the trained ones reuse the last set
        def norm(i, h):
            m = stats.stat("mean", stats.layers[i])[min(k, train_steps)].view(1, -1, 1, 1)
            v = stats.stat("var", stats.layers[i])[min(k, train_steps)].view(1, -1, 1, 1)
            return (h - m) / torch.sqrt(v + 1e-5)
        return norm

    for t in range(T):
        fast = [p.requires_grad_() for p in map(torch.Tensor.clone, params.values())]
        for _ in range(eval_steps):
            support = F.cross_entropy(reference_forward(fast, sx[t], batch_stat_norm([])), sy[t])
            fast = [w - LR * g for w, g in zip(fast, torch.autograd.grad(support, fast), strict=True)]
        ref = reference_forward(fast, qx[t], running_norm(eval_steps))
        assert torch.allclose(logits[t], ref, rtol=0, atol=1e-12)
    # inductive: a query's logits do not depend on the other queries ...
    few = maml_logits(net, params, LR, sx, sy, qx[:, :4], TaskConfig(eval_steps), stats=stats,
                      use_vmap=use_vmap)
    assert torch.allclose(few, logits[:, :4], rtol=0, atol=1e-12)
    # ... whereas with transductive batch statistics they do
    trans = maml_logits(net, params, LR, sx, sy, qx, TaskConfig(eval_steps))
    trans_few = maml_logits(net, params, LR, sx, sy, qx[:, :4], TaskConfig(eval_steps))
    assert (trans_few - trans[:, :4]).abs().max() > 1e-3
    assert all(torch.equal(b, torch.zeros_like(b)) for n, b in net.named_buffers()
               if n.endswith("running_mean"))


def test_learner_option_trains_saves_and_evaluates(tiny_dataset, tmp_path):
    from episodes import EpisodeSampler
    from fewshot.engine.checkpoint import load_learner
    from fewshot.engine.train import TrainConfig, train

    torch.manual_seed(0)
    spec = ModelSpec("maml", "conv4", 1, 16, {"hidden": 4, "n_way": N, "bn": "per_step",
                                              "inner_steps": "2", "eval_inner_steps": "3"})
    with pytest.warns(UserWarning, match="per_step' is experimental"):
        learner = build_learner(spec)
    sampler = EpisodeSampler(tiny_dataset(size=16), N, 1, 2, episodes_per_batch=4, seed=0)
    train(learner, spec, sampler, TrainConfig(steps=2, progress=False, checkpoint_dir=str(tmp_path)))
    assert learner.bn_stats.stat("var", learner.bn_stats.layers[0]).shape[0] == 3
    assert not torch.equal(learner.bn_stats.stat("mean", learner.bn_stats.layers[0])[2],
                           torch.zeros(4))
    with pytest.warns(UserWarning, match="experimental"):
        restored = load_learner(tmp_path / "last.pt")[0]
    for name, buf in learner.bn_stats.named_buffers():
        assert torch.equal(buf, dict(restored.bn_stats.named_buffers())[name])
    batch = sampler.sample()
    learner.eval(), restored.eval()
    args = (batch.support_x, batch.support_y, batch.query_x, N)
    assert torch.allclose(learner.infer(*args), restored.infer(*args), atol=1e-6)


def test_bad_configurations_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="bn must be"):
        build_learner(ModelSpec("maml", options={"hidden": 4, "bn": "running"}))
    with pytest.raises(ValueError, match="use bn='transductive'"):
        MAML(nn.Flatten(), 784, bn="per_step")  # no BatchNorm layer (refused before warning)
    with pytest.raises(ValueError, match="InstanceNorm2d"):
        StepStatistics(nn.Sequential(nn.InstanceNorm2d(4, track_running_stats=True)), 2)
    net = tiny_net()
    stats = StepStatistics(net, 2).eval()  # the model left in train mode
    sx, sy, qx, _ = (x[:1].float() if x.is_floating_point() else x[:1] for x in episode())
    with pytest.raises(ValueError, match="call train\\(\\) or eval\\(\\) on both"):
        maml_logits(net, dict(net.named_parameters()), LR, sx, sy, qx, TaskConfig(1), stats=stats)


def test_per_step_statistics_warn_that_they_are_experimental(recwarn):
    build_learner(ModelSpec("maml", options={"hidden": 4}))
    assert not [w for w in recwarn if "per_step" in str(w.message)]
    with pytest.warns(UserWarning, match="experimental.*inductive.*bn='transductive'"):
        build_learner(ModelSpec("maml", options={"hidden": 4, "bn": "per_step"}))


def test_fixed_statistics_make_the_inner_step_depend_on_the_filter_scale(f64):
    """The mechanism behind the per-step divergence (BENCHMARKS.md, issue 9): with batch
    statistics, scaling a conv filter before BatchNorm changes neither the loss nor the next
    layers' inputs and shrinks its gradient by the same factor; with fixed statistics it changes
    both, so the inner rate tuned in training is no longer the step the network takes."""
    torch.manual_seed(0)
    net = tiny_net().eval()
    stats = StepStatistics(net, 1).eval()
    sx, sy, _, _ = episode(1)
    params = {n: p.detach() for n, p in net.named_parameters()}
    scaled = {**params, "0.weight": 4 * params["0.weight"], "0.bias": 4 * params["0.bias"]}

    def loss_and_grad(p, buffers):
        p = {n: v.clone().requires_grad_() for n, v in p.items()}
        loss = F.cross_entropy(torch.func.functional_call(net, (p, buffers), (sx[0],)), sy[0])
        return loss, torch.autograd.grad(loss, p["0.weight"])[0]

    free = bn_free_buffers(net)
    (l1, g1), (l4, g4) = loss_and_grad(params, free), loss_and_grad(scaled, free)
    assert torch.allclose(l1, l4, atol=1e-6) and torch.allclose(g4, g1 / 4, rtol=1e-3, atol=1e-6)  # eps
    fixed = stats.buffers(net, 0)
    (l1, g1), (l4, g4) = loss_and_grad(params, fixed), loss_and_grad(scaled, fixed)
    assert (l1 - l4).abs() > 1e-3 and not torch.allclose(g4, g1 / 4, atol=1e-3)
