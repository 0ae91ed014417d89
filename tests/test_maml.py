"""MAML: meta-gradients against hand-written autograd and `higher`, vmap vs loop, chunking,
BatchNorm semantics, memory, torchvision models, and the learner in the one training loop."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot import ModelSpec, build_learner, make_spec
from fewshot.methods.maml import (
    MAML,
    MAMLConfig,
    TaskConfig,
    batched_logits,
    bn_free_buffers,
    inner_loop,
    maml_logits,
    paper_eval_steps,
)

T, N, K, Q, LR = 3, 5, 2, 3, 0.4


def tiny_net(bn: bool) -> nn.Sequential:
    """Two conv blocks on 1x8x8 images, then a 5-way linear head."""
    def block(cin: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU(),
                nn.MaxPool2d(2)]
    return nn.Sequential(*block(1), *block(4), nn.Flatten(), nn.Linear(16, N))


def reference_forward(w: list[torch.Tensor], x: torch.Tensor, bn: bool) -> torch.Tensor:
    """The same network written as plain function calls on a weight list."""
    i = 0
    for _ in range(2):
        x = F.conv2d(x, w[i], w[i + 1], padding=1)
        i += 2
        if bn:
            x = F.batch_norm(x, None, None, w[i], w[i + 1], training=True)
            i += 2
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.flatten(1), w[i], w[i + 1])


def reference_meta_grads(net: nn.Module, episode, steps: int, bn: bool, first_order: bool):
    """Meta-gradient of the mean query loss over tasks, with a plain autograd inner loop."""
    sx, sy, qx, qy = episode
    weights = list(net.parameters())
    total = 0.0
    for t in range(sx.shape[0]):
        fast = weights
        for _ in range(steps):
            loss = F.cross_entropy(reference_forward(fast, sx[t], bn), sy[t])
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [w - LR * g for w, g in zip(fast, grads, strict=True)]
        total = total + F.cross_entropy(reference_forward(fast, qx[t], bn), qy[t]) / sx.shape[0]
    return torch.autograd.grad(total, weights)


def make_episode(dtype=torch.float64, size: int = 8, channels: int = 1, t: int = T):
    g = torch.Generator().manual_seed(1)
    sx = torch.rand(t, N * K, channels, size, size, generator=g, dtype=dtype)
    qx = torch.rand(t, N * Q, channels, size, size, generator=g, dtype=dtype)
    sy = torch.arange(N).repeat_interleave(K).repeat(t, 1)
    qy = torch.arange(N).repeat_interleave(Q).repeat(t, 1)
    return sx, sy, qx, qy


def meta_grads(net: nn.Module, episode, steps: int, first_order: bool = False, **kw):
    sx, sy, qx, qy = episode
    net.zero_grad(set_to_none=True)
    logits = maml_logits(net, dict(net.named_parameters()), LR, sx, sy, qx,
                         TaskConfig(steps, first_order), **kw)
    F.cross_entropy(logits.flatten(0, 1), qy.flatten()).backward()
    return [p.grad.clone() for p in net.parameters()]


def rel_diff(a, b) -> float:
    a, b = torch.cat([x.flatten() for x in a]), torch.cat([x.flatten() for x in b])
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("bn", [False, True])
def test_meta_gradients_equal_plain_autograd(f64, steps, bn):
    torch.manual_seed(0)
    net, episode = tiny_net(bn), make_episode()
    ref = reference_meta_grads(net, episode, steps, bn, first_order=False)
    vmapped = meta_grads(net, episode, steps, use_vmap=True)
    looped = meta_grads(net, episode, steps, use_vmap=False)
    chunked = meta_grads(net, episode, steps, chunk_size=2, use_vmap=True)
    assert rel_diff(vmapped, ref) < 1e-10
    assert rel_diff(looped, ref) < 1e-10
    assert rel_diff(chunked, ref) < 1e-10
    assert rel_diff(vmapped, looped) < 1e-10

    first = meta_grads(net, episode, steps, first_order=True, use_vmap=True)
    assert rel_diff(first, reference_meta_grads(net, episode, steps, bn, first_order=True)) < 1e-10
    assert rel_diff(first, meta_grads(net, episode, steps, True, use_vmap=False)) < 1e-10
    assert rel_diff(first, ref) > 1e-3  # first order is a different gradient


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradients_equal_higher(f64, steps, bn, first_order):
    higher = pytest.importorskip("higher")
    torch.manual_seed(0)
    net, episode = tiny_net(bn), make_episode()
    sx, sy, qx, qy = episode
    net.zero_grad(set_to_none=True)
    inner_opt = torch.optim.SGD(net.parameters(), lr=LR)
    for t in range(T):
        with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fnet, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fnet(sx[t]), sy[t]))
            if first_order:  # higher's first order: gradients at the adapted weights
                grads = torch.autograd.grad(F.cross_entropy(fnet(qx[t]), qy[t]) / T,
                                            fnet.parameters())
                for p, g in zip(net.parameters(), grads, strict=True):
                    p.grad = g if p.grad is None else p.grad + g
            else:
                (F.cross_entropy(fnet(qx[t]), qy[t]) / T).backward()
    ref = [p.grad.clone() for p in net.parameters()]
    assert rel_diff(meta_grads(net, episode, steps, first_order, use_vmap=True), ref) < 1e-10


def test_tasks_are_vmapped_except_on_the_cpu_by_default():
    calls = []

    def task_fn(state, sx, sy, qx):
        calls.append(1)
        return qx.sum(0)

    sx, sy, qx, _ = make_episode(torch.float32)
    for use_vmap, expected in ((None, T), (False, T), (True, 1)):  # the test runs on the CPU
        calls.clear()
        out = batched_logits(task_fn, {}, sx, sy, qx, use_vmap=use_vmap)
        assert len(calls) == expected and torch.allclose(out, qx.sum(1))
    assert build_learner(spec()).use_vmap is None  # the learner's default is the automatic choice


def test_inner_loop_is_pure_and_reduces_support_loss(f64):
    net, (sx, sy, _, _) = tiny_net(True), make_episode()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = {k: v.detach() for k, v in net.named_parameters()}
    fast = inner_loop(net, params, None, sx[0], sy[0], LR, steps=5)
    loss = [F.cross_entropy(torch.func.functional_call(net, (p, bn_free_buffers(net)), (sx[0],)),
                            sy[0]) for p in [params, *fast]]
    assert loss[-1] < loss[0]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_anil_adapts_only_head_and_matches_full_model_with_frozen_body(f64):
    torch.manual_seed(0)
    net, (sx, sy, qx, _) = tiny_net(True), make_episode()
    body, head = net[:-1], net[-1]
    anil = maml_logits(head, dict(head.named_parameters()), LR, sx, sy, qx, TaskConfig(3),
                       encoder=body, use_vmap=True)
    names = tuple(f"{len(net) - 1}.{n}" for n, _ in head.named_parameters())
    full = maml_logits(net, dict(net.named_parameters()), LR, sx, sy, qx,
                       TaskConfig(3, adapt=names), use_vmap=False)
    assert torch.allclose(anil, full, rtol=0, atol=1e-12)


def spec(**options) -> ModelSpec:
    return ModelSpec("maml", "conv4", 1, 16, {"hidden": 8, "n_way": N, **options})


def episode32():
    sx, sy, qx, qy = make_episode(torch.float32, size=16, t=2)
    return sx, sy, qx, qy


def test_batchnorm_eval_mode_uses_batch_statistics_and_buffers_stay_untouched():
    torch.manual_seed(0)
    learner = build_learner(spec(inner_steps=2, eval_inner_steps=2))
    sx, sy, qx, qy = episode32()
    buffers = {k: v.clone() for k, v in learner.named_buffers() if "running" in k}
    train_logits = learner(sx, sy, qx, N)
    learner.loss(train_logits, qy).backward()
    learner.eval()
    eval_logits = learner(sx, sy, qx, N)
    assert not eval_logits.requires_grad  # evaluation builds no meta-gradient graph
    assert torch.allclose(train_logits.detach(), eval_logits, atol=1e-5)
    assert all(torch.equal(v, dict(learner.named_buffers())[k]) for k, v in buffers.items())


def test_learner_options_eval_steps_learned_lr_multistep_and_head_size():
    torch.manual_seed(0)
    sx, sy, qx, qy = episode32()
    learner = build_learner(spec(inner_steps="2", eval_inner_steps=4, learn_lr="true",
                                 multi_step_loss=True, msl_anneal=2))
    assert learner.step_weights().tolist() == [0.5, 0.5]
    learner.loss(learner(sx, sy, qx, N), qy).backward()
    assert all(p.grad is not None and p.grad.shape == (2,) for p in learner.lrs.values())
    learner.end_step()  # the training loop's call after each optimizer step
    assert learner.step_weights().tolist() == [0.25, 0.75]
    learner.loss(learner(sx, sy, qx, N), qy)
    learner.end_step()
    assert learner.step_weights().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="n_way=3"):
        learner(sx[:, :6], sy[:, :6] % 3, qx, 3)
    zero = build_learner(spec(head="zero", anil=True))
    assert zero(sx[:, :6], sy[:, :6] % 3, qx, 3).shape == (2, N * Q, 3)
    with pytest.raises(ValueError, match="unknown maml option"):
        build_learner(spec(inner_step=3))


def test_evaluation_defaults_to_the_papers_test_time_steps():
    # Finn et al. (appendix A.1): 5-way Omniglot trained with 1 step, tested with 3; mini-ImageNet
    # trained with 5, tested with 10 (20-way Omniglot, 5 and 5, needs eval_inner_steps=5)
    assert [paper_eval_steps(s) for s in (0, 1, 2, 5)] == [0, 3, 4, 10]
    assert MAMLConfig().eval_inner_steps == 3
    assert MAMLConfig(inner_steps=5).eval_inner_steps == 10
    assert MAMLConfig(inner_steps=5, eval_inner_steps=5).eval_inner_steps == 5
    assert make_spec("maml", "conv4", 1, 16, {"inner_steps": "5"}).options["eval_inner_steps"] == 10
    assert build_learner(spec()).eval_inner_steps == 3
    assert MAML(tiny_net(True)[:-1], 16, N).eval_inner_steps == 3
    learner = build_learner(spec(eval_inner_steps=0))
    sx, sy, qx, _ = episode32()
    with torch.no_grad():  # 0 test steps: the meta-learned model as it is (batch statistics)
        unadapted = learner.net(qx[0])
    learner.eval()
    assert torch.allclose(learner(sx, sy, qx, N)[0], unadapted, atol=1e-6)


def test_learner_trains_with_the_one_training_loop(tiny_dataset, tmp_path):
    from episodes import EpisodeSampler
    from fewshot.engine.train import TrainConfig, train

    torch.manual_seed(0)
    s = spec(inner_steps=1, eval_inner_steps=2, chunk_size=2)
    learner = build_learner(s)
    sampler = EpisodeSampler(tiny_dataset(size=16), N, 1, 2, episodes_per_batch=4, seed=0)
    result = train(learner, s, sampler, TrainConfig(steps=3, progress=False,
                                                    checkpoint_dir=str(tmp_path)))
    assert result.steps == 3 and (tmp_path / "last.pt").is_file()


def test_memory_is_released_between_meta_iterations():
    torch.manual_seed(0)
    learner = MAML(tiny_net(True)[:-1], 16, N, inner_steps=2, multi_step_loss=True)
    opt = torch.optim.Adam(learner.parameters(), 1e-3)
    sx, sy, qx, qy = make_episode(torch.float32, t=2)
    counts = []
    for _ in range(20):
        logits = learner(sx, sy, qx, N)
        loss = learner.loss(logits, qy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        outputs = weakref.ref(logits), weakref.ref(loss)
        del logits, loss
        assert outputs[0]() is None and outputs[1]() is None  # freed without waiting for gc
        assert learner._step_logits is None  # the multi-step logits were released by loss()
        gc.collect()
        if _ in (2, 19):  # live Python tensors (gc scan is slow: twice only)
            counts.append(sum(type(o) in (torch.Tensor, nn.Parameter) for o in gc.get_objects()))
    assert counts[1] <= counts[0], counts


@pytest.mark.gpu
def test_cuda_memory_is_flat_over_meta_iterations():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    learner = build_learner(spec(inner_steps=2)).cuda()
    opt = torch.optim.Adam(learner.parameters(), 1e-3)
    sx, sy, qx, qy = (x.cuda() for x in episode32())
    allocated = []
    for _ in range(20):
        loss = learner.loss(learner(sx, sy, qx, N), qy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        del loss
        allocated.append(torch.cuda.memory_allocated())
    assert allocated[-1] <= allocated[2], allocated


def test_torchvision_model_adapts_through_the_functional_inner_loop(f64):
    """float64: in float32 the fused (loop) and decomposed (vmap) BatchNorm second-order
    gradients of this deep net on 10-image batches differ by ~1e-3 relative (rounding)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=N)  # torchvision's class, unchanged
    sx, sy, qx, qy = make_episode(torch.float64, size=8, channels=3, t=2)
    sx, sy, qx, qy = sx[:, ::K], sy[:, ::K], qx[:, ::Q], qy[:, ::Q]  # 1 shot, 1 query
    params = dict(net.named_parameters())
    fast = inner_loop(net, {k: v.detach() for k, v in params.items()}, None, sx[0], sy[0], 0.1, 3)
    loss = [F.cross_entropy(torch.func.functional_call(net, (p, bn_free_buffers(net)), (sx[0],)),
                            sy[0]) for p in (params, fast[-1])]
    assert loss[1] < loss[0]
    grads = {}
    for use_vmap in (True, False):
        logits = maml_logits(net, params, 0.1, sx, sy, qx, TaskConfig(1), use_vmap=use_vmap)
        g = torch.autograd.grad(F.cross_entropy(logits.flatten(0, 1), qy.flatten()),
                                list(params.values()))
        grads[use_vmap] = g
    assert rel_diff(grads[True], grads[False]) < 1e-10


def test_compile_option_is_parsed_and_off_by_default():
    assert build_learner(spec()).logits_fn is maml_logits
    learner = build_learner(spec(compile="true"))  # wraps, compiles at the first call
    assert learner.logits_fn is not maml_logits
    with pytest.raises(ValueError, match="compile"):
        build_learner(spec(compile="sometimes"))


@pytest.mark.slow
def test_compiled_meta_loss_equals_eager():
    # minutes on a CPU: torch.compile traces the inner loop with its second-order gradients
    sx, sy, qx, qy = episode32()
    grads = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        learner = build_learner(spec(compile=compile_, vmap=True))
        loss = learner.loss(learner(sx, sy, qx, N), qy)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in learner.parameters()]))
    (l0, g0), (l1, g1) = grads
    assert torch.allclose(l0, l1, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g0, g1, strict=True))
