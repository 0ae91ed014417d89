"""The MAML meta-iterations that ``benchmarks/peers.py`` times, ours and the peers', one builder
per variant, each returning ``step() -> loss``: one meta-iteration (forward, backward, Adam) on a
fixed batch of 5-way 1-shot 15-query tasks of 1x28x28 images. Every variant starts from the same
Conv-4 weights (a peer gets a copy of our module), so the first meta-losses can be compared.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewshot import ModelSpec, build_learner
from fewshot.engine.precision import autocast

N, K, Q = 5, 1, 15
INNER_LR = 0.4


def maml_batch(batch: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A fixed batch of tasks: support ``[B, N*K, 1, 28, 28]``, labels ``[B, N*K]``, queries
    ``[B, N*Q, 1, 28, 28]``, labels ``[B, N*Q]`` (random pixels, class-major labels)."""
    g = torch.Generator().manual_seed(0)
    sx = torch.rand(batch, N * K, 1, 28, 28, generator=g).to(device)
    qx = torch.rand(batch, N * Q, 1, 28, 28, generator=g).to(device)
    sy = torch.arange(N, device=device).repeat_interleave(K).repeat(batch, 1)
    qy = torch.arange(N, device=device).repeat_interleave(Q).repeat(batch, 1)
    return sx, sy, qx, qy


def our_maml(steps: int, device: torch.device, hidden: int = 64, vmap: bool | None = None,
             compile: bool = False):
    """Our MAML learner (second order, transductive BatchNorm, ``vmap`` None: the device's
    default; ``compile``: its option, the inner loop and query forward through
    ``torch.compile``), seeded so that every variant starts from the same weights."""
    torch.manual_seed(0)
    return build_learner(ModelSpec("maml", "conv4", 1, 28, {
        "inner_steps": steps, "n_way": N, "inner_lr": INNER_LR, "hidden": hidden,
        "vmap": vmap, "compile": compile})).to(device)


def higher_meta_loss(net: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor,
                     steps: int, lr: float = INNER_LR) -> Tensor:
    """``higher``'s documented MAML: one task at a time in ``innerloop_ctx``, the query loss's
    backward per task (the gradients of ``net`` accumulate). Returns the mean query loss."""
    import higher
    inner = torch.optim.SGD(net.parameters(), lr=lr)
    total = torch.zeros((), device=sx.device)
    for i in range(len(sx)):
        with higher.innerloop_ctx(net, inner, copy_initial_weights=False) as (fnet, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fnet(sx[i]), sy[i]))
            loss = F.cross_entropy(fnet(qx[i]), qy[i]) / len(sx)
            loss.backward()
            total += loss.detach()
    return total


def plain_meta_loss(net: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor,
                    steps: int, lr: float = INNER_LR) -> Tensor:
    """MAML as a user writes it with plain autograd: a loop over tasks, inner SGD with
    ``torch.autograd.grad(create_graph=True)``, ``functional_call`` with the adapted weights."""
    losses = []
    for i in range(len(sx)):
        fast = dict(net.named_parameters())
        for _ in range(steps):
            inner = F.cross_entropy(torch.func.functional_call(net, fast, (sx[i],)), sy[i])
            grads = torch.autograd.grad(inner, list(fast.values()), create_graph=True)
            fast = {k: w - lr * g for (k, w), g in zip(fast.items(), grads, strict=True)}
        losses.append(F.cross_entropy(torch.func.functional_call(net, fast, (qx[i],)), qy[i]))
    return torch.stack(losses).mean()


class _KwargsNet(nn.Module):
    """A Conv-4 + linear head called as parallel-metalearn calls a backbone: ``forward(x,
    **kwargs)``, the keyword arguments passed to its (converted) BatchNorm layers."""

    def __init__(self, net: nn.Sequential, bn_type: type) -> None:
        super().__init__()
        self.net, self.bn_type = net, bn_type

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        for layer in self.net.modules():
            if isinstance(layer, self.bn_type):
                x = layer(x, **kwargs)
            elif not list(layer.children()):  # a leaf: conv, ReLU, pool or the head
                x = layer(x.flatten(1) if isinstance(layer, nn.Linear) else x)
        return x


def metalearn_step(net: nn.Module, batch: tuple[Tensor, ...], steps: int, backend: str,
                   device: torch.device) -> Callable[[], float]:
    """parallel-metalearn 0.5's MAML (``backend`` "vmap" with the whole batch in one chunk, or
    "sequential"): our Conv-4 and head, each BatchNorm replaced by its functional ``BatchNorm``
    (batch statistics, no running buffers, as ours; its ``ModelTranslator`` would do this but
    fails in 0.5.6, passing ``learn_gamma`` to that class), inner SGD at a fixed rate, its
    ``step`` on an iterator of (support, labels, queries, labels)."""
    from metalearn.algorithms import MAML
    from metalearn.inner_optimizers import InnerSGD
    from metalearn.loss import CategoricalAccuracy, CrossEntropy
    from metalearn.model_wrappers import MAML_Model
    from metalearn.nn_models.basic_layers.BatchNormalization import BatchNorm
    net = copy.deepcopy(net)
    for block in net.modules():
        for name, child in block.named_children():
            if isinstance(child, nn.BatchNorm2d):
                bn = BatchNorm(child.num_features, child.eps, affine=True,
                               track_running_stats=False)
                bn.weight.data.copy_(child.weight.data)
                bn.bias.data.copy_(child.bias.data)
                setattr(block, name, bn.to(child.weight.device))
    model = MAML_Model(backbone=_KwargsNet(net, BatchNorm), head=_Identity())
    inner = InnerSGD(initial_fast_weights=model.get_fast_weights(), inner_lr=INNER_LR,
                     first_order=False, learn_lr=False, max_inner_steps=steps)
    algo = MAML(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                inner_optimizer=inner, inner_steps=steps, chunk_size=len(batch[0]), device=device,
                support_loss_fn=CrossEntropy(metric_fn=CategoricalAccuracy()), backend=backend)
    sx, sy, qx, qy = batch
    task = (sx, {"labels": sy}, qx, {"labels": qy})
    return lambda: algo.step(iter([task]), training=True)[0]


class _Identity(nn.Module):
    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return x


def fewshot_maml_step(learner: nn.Module, batch: tuple[Tensor, ...], cuda_graph: bool = False,
                      precision: str = "fp32") -> Callable[[], Tensor]:
    """Our meta-iteration: the learner's meta-loss on the batch (in ``precision``, "fp32" or
    "bf16" autocast), backward, Adam; with ``cuda_graph`` the whole iteration captured once as a
    CUDA graph and replayed, the batch copied into its static inputs first (CUDA only)."""
    def meta_loss(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        with autocast(sx.device, precision):
            return learner.loss(learner(sx, sy, qx, N), qy)

    if cuda_graph:
        return cuda_graph_step(learner, meta_loss, batch)
    opt = torch.optim.Adam(learner.parameters(), 1e-3)

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = meta_loss(*batch)
        loss.backward()
        opt.step()
        return loss
    return step


def cuda_graph_step(model: nn.Module, meta_loss: Callable[..., Tensor], batch: tuple[Tensor, ...]
                    ) -> Callable[[], Tensor]:
    """PyTorch's whole-network capture: three warm-up iterations on a side stream, then one
    iteration (forward, backward, ``Adam(capturable=True).step``) captured into a CUDA graph; the
    weights and Adam's state are then put back as they were before the warm-up (in place, where
    the graph reads them), so the first replay is the first iteration. Each call copies ``batch``
    into the graph's static inputs and replays it."""
    opt = torch.optim.Adam(model.parameters(), 1e-3, capturable=True)
    initial = [p.detach().clone() for p in model.parameters()]
    static = [t.clone() for t in batch]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            meta_loss(*static).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss = meta_loss(*static)
        loss.backward()
        opt.step()
    with torch.no_grad():
        for p, p0 in zip(model.parameters(), initial, strict=True):
            p.copy_(p0)
        for state in opt.state.values():  # Adam's initial state: zero moments, step 0
            for value in state.values():
                value.zero_()

    def step() -> Tensor:
        for dst, src in zip(static, batch, strict=True):
            dst.copy_(src)
        graph.replay()
        return loss
    return step


def plain_step(fn: Callable[..., Tensor], net: nn.Module, batch: tuple[Tensor, ...], steps: int
               ) -> Callable[[], Tensor]:
    """A meta-iteration around ``fn(net, *batch, steps)`` (:func:`plain_meta_loss` or
    :func:`higher_meta_loss`, which runs its own backward per task): Adam on ``net``."""
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = fn(net, *batch, steps)
        if loss.requires_grad:
            loss.backward()
        opt.step()
        return loss
    return step
