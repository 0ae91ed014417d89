"""The training steps that ``benchmarks/peers.py`` times, ours and the peers', one builder per
variant. All train on 5-way 1-shot 15-query episodes of 1x28x28 images (Omniglot's shape).

Metric learners: a builder returns ``run(episodes) -> (episodes_done, seconds)``, one timed round.
MAML: a builder returns ``step() -> loss``, one meta-iteration (forward, backward, Adam) on a
fixed batch of tasks. Every model starts from the same Conv-4 weights where the architectures
allow it (a peer gets a copy of our module), so the first losses can be compared.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import sync
from torch import Tensor, nn

from episodes import EpisodeSampler, TensorClassDataset
from fewshot import ModelSpec, TrainConfig, build_learner, train
from fewshot.backbones import Conv4
from fewshot.memory import memory_budget
from fewshot.step_size import auto_episodes_per_step, training_bytes_per_episode

N, K, Q = 5, 1, 15
INNER_LR = 0.4
Round = Callable[[int], tuple[int, float]]


def synthetic_dataset(device: torch.device, classes: int = 64, per_class: int = 20
                      ) -> TensorClassDataset:
    """Random uint8 images ``[classes * per_class, 1, 28, 28]`` on ``device`` (speed does not
    depend on the pixel values)."""
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(targets), 1, 28, 28), generator=g, dtype=torch.uint8)
    return TensorClassDataset(images, targets, [f"c{i}" for i in range(classes)]).to(device)


def stepper(step: Callable[[], object], device: torch.device, limit: float) -> Round:
    """A round of ``episodes`` calls of ``step`` (one episode each; fewer if ``limit`` seconds
    have passed), timed with the device synchronised at both ends."""
    def run(episodes: int) -> tuple[int, float]:
        sync(device)
        start, done = time.perf_counter(), 0
        while done < episodes and (done == 0 or time.perf_counter() - start < limit):
            step()
            done += 1
        sync(device)
        return done, time.perf_counter() - start
    return run


# ---------------------------------------------------------------- metric learners
METRIC_SPECS = {"protonet": ("protonet", {}), "matching_fce": ("matching", {"fce": True}),
                "relation": ("relation", {})}


def fewshot_metric(method: str, data: TensorClassDataset, device: torch.device,
                   per_step: int | str, limit: float) -> tuple[Round, dict]:
    """Our learner through :func:`fewshot.train.train` with ``per_step`` episodes per optimizer
    step (``"auto"``: what ``fewshot train --episodes-per-step auto`` picks on this device). The
    round's seconds are the training loop's own (``TrainResult.seconds``), set-up excluded; a
    round stops after ``limit`` seconds."""
    torch.manual_seed(0)
    name, options = METRIC_SPECS[method]
    spec = ModelSpec(name, "conv4", 1, 28, dict(options))
    learner = build_learner(spec).to(device)
    if per_step == "auto":
        per_episode = training_bytes_per_episode(learner, N, K, Q, (1, 28, 28), device)
        per_step = auto_episodes_per_step(per_episode, N * (K + Q), memory_budget(device), device)
    sampler = EpisodeSampler(data, N, K, Q, episodes_per_batch=per_step, seed=0, device=device)

    def run(episodes: int) -> tuple[int, float]:
        result = train(learner, spec, sampler, TrainConfig(steps=max(1, episodes // per_step),
                                                           progress=False, time_limit=limit),
                       device=device)
        return result.episodes, result.seconds
    return run, {"episodes_per_step": per_step}


def plain_protonet(data: TensorClassDataset, device: torch.device, limit: float
                   ) -> tuple[Round, dict]:
    """ProtoNet as a user writes it: Conv-4, prototypes, squared distances, cross-entropy, Adam,
    one episode per step (episodes from the same on-device sampler)."""
    torch.manual_seed(0)
    encoder = Conv4(1, 64).to(device)
    opt = torch.optim.Adam(encoder.parameters(), 1e-3)
    sampler = EpisodeSampler(data, N, K, Q, seed=0, device=device)

    def step() -> None:
        ep = sampler.sample()
        prototypes = encoder(ep.support_x[0]).view(N, K, -1).mean(1)
        logits = -torch.cdist(encoder(ep.query_x[0]), prototypes).pow(2)
        loss = F.cross_entropy(logits, ep.query_y[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return stepper(step, device, limit), {"episodes_per_step": 1}


def easyfsl_metric(method: str, data: TensorClassDataset, device: torch.device, limit: float
                   ) -> tuple[Round, dict]:
    """easyfsl 1.5's classifier with its documented training step (``process_support_set`` on the
    support set, forward on the queries, the method's loss, Adam), one episode per step. Backbone:
    our Conv-4 (64 filters; for Relation our 64x5x5 feature-map encoder); easyfsl's own FCE LSTMs
    and relation module (which differs from the authors': adaptive max-pools to 5x5 and 1x1)."""
    from easyfsl.methods import MatchingNetworks, PrototypicalNetworks, RelationNetworks
    torch.manual_seed(0)
    if method == "protonet":
        model: nn.Module = PrototypicalNetworks(Conv4(1, 64))
    elif method == "matching_fce":
        model = MatchingNetworks(Conv4(1, 64), feature_dimension=64)
    else:
        embedding = build_learner(ModelSpec("relation", "conv4", 1, 28, {})).embedding
        model = RelationNetworks(embedding, feature_dimension=64)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sampler = EpisodeSampler(data, N, K, Q, seed=0, device=device)

    def step() -> None:
        ep = sampler.sample()
        model.process_support_set(ep.support_x[0], ep.support_y[0])
        scores, labels = model(ep.query_x[0]), ep.query_y[0]
        if method == "protonet":
            loss = F.cross_entropy(scores, labels)
        elif method == "matching_fce":  # log-probabilities
            loss = F.nll_loss(scores, labels)
        else:  # relation scores in [0, 1]
            loss = F.mse_loss(scores, F.one_hot(labels, N).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return stepper(step, device, limit), {"episodes_per_step": 1}


# ---------------------------------------------------------------- MAML
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


def fewshot_maml_step(learner: nn.Module, batch: tuple[Tensor, ...], cuda_graph: bool = False
                      ) -> Callable[[], Tensor]:
    """Our meta-iteration: the learner's meta-loss on the batch, backward, Adam; with
    ``cuda_graph`` the whole iteration captured once as a CUDA graph and replayed, the batch
    copied into its static inputs first (CUDA only)."""
    def meta_loss(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
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
    iteration (forward, backward, ``Adam(capturable=True).step``) captured into a CUDA graph.
    Each call copies ``batch`` into the graph's static inputs and replays it."""
    opt = torch.optim.Adam(model.parameters(), 1e-3, capturable=True)
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
