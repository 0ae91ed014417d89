"""Heads fitted on each episode's support features, as pure functions batched over episodes.

Shapes: support features ``[T, S, D]`` (S = N*K), labels ``[T, S]`` in ``0..N-1``, query features
``[T, M, D]``, logits ``[T, M, N]``. Per-episode parameters are stacked ``[T, ...]`` tensors
trained by one optimizer on the sum of the T episodes' losses: the losses are independent and
SGD's and Adam's updates are elementwise, so this is exactly T separate optimizations, run as
one batched computation on the device (no loop over episodes).

Compared with the references (read, not copied):

- **linear** (Chen et al. 2019, Baseline; CloserLookFewShot ``methods/baselinefinetune.py``): a
  new ``nn.Linear(D, N)`` (PyTorch's default initialisation) trained with cross-entropy by SGD
  (lr 0.01, momentum 0.9, dampening 0.9, weight decay 0.001) for 100 epochs over the support set
  in shuffled mini-batches of 4: the same here, with each episode's own shuffle. Same.
- **cosine** (Baseline++; ``backbone.distLinear``): scores ``scale * cos`` between the
  L2-normalised feature and each class weight, the weight split into a direction and a
  class-wise learnable norm (``WeightNorm``, dim 0; the norm starts at the direction's norm),
  no bias, scale 2 (their value for at most 200 classes); trained as the linear head. Same,
  except features are normalised by ``max(|x|, 1e-12)`` where they add 1e-5 to the norm.
- **knn** (Tian et al. 2020, RFS ``eval/meta_eval.py`` ``NN``): nearest support feature by
  Euclidean distance, after L2 normalisation (their ``is_norm``). Same for ``k=1``; ``k>1``
  votes among the k nearest (ties to the class with the nearest member), which RFS has not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..functional import euclidean_logits


def linear_logits(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight^T + bias``: x ``[T, M, D]``, weight ``[T, N, D]``, bias ``[T, N]``."""
    out = x @ weight.transpose(1, 2)
    return out if bias is None else out + bias.unsqueeze(1)


def cosine_classifier_logits(x: Tensor, direction: Tensor, norm: Tensor | None,
                             scale: float) -> Tensor:
    """Baseline++ scores: ``scale * normalize(x) @ (norm * normalize(direction))^T``.

    x ``[T, M, D]``, direction ``[T, N, D]``, norm ``[T, N]`` (None: unit-norm weights, plain
    cosine similarity) -> ``[T, M, N]``.
    """
    w = F.normalize(direction, dim=-1)
    if norm is not None:
        w = w * norm.unsqueeze(-1)
    return scale * F.normalize(x, dim=-1) @ w.transpose(1, 2)


def knn_logits(support: Tensor, support_y: Tensor, query: Tensor, n_way: int, k: int = 1,
               distance: str = "euclidean") -> Tensor:
    """k-nearest-neighbour scores ``[T, M, N]``.

    ``k=1``: each class's score is the similarity of its nearest support feature (negative
    squared Euclidean distance, or cosine similarity), so the argmax is the 1-NN label. ``k>1``:
    the number of the k nearest support features of each class, plus a tie-break below one vote
    favouring the class whose nearest member is nearest.
    """
    if not 1 <= k <= support.shape[1]:
        raise ValueError(f"option k must be between 1 and the {support.shape[1]} support images "
                         f"of an episode, got {k}")
    sim = (euclidean_logits(query, support) if distance == "euclidean"
           else F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2))
    member = F.one_hot(support_y, n_way).bool().unsqueeze(1)  # [T, 1, S, N]
    nearest = sim.unsqueeze(-1).masked_fill(~member, float("-inf")).amax(2)  # [T, M, N]
    if k == 1:
        return nearest
    top = sim.topk(k, dim=-1).indices  # [T, M, k]
    votes = F.one_hot(support_y.gather(1, top.flatten(1)).view_as(top), n_way).sum(2)
    low, high = nearest.amin(-1, keepdim=True), nearest.amax(-1, keepdim=True)
    return votes + 0.5 * (nearest - low) / (high - low).clamp_min(1e-12)


def uniform_init(shape: tuple[int, ...], fan_in: int, generator: torch.Generator,
                 like: Tensor) -> Tensor:
    """``nn.Linear``'s default initialisation: uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``
    (drawn on the CPU from ``generator``, returned with ``like``'s dtype and device)."""
    bound = 1 / math.sqrt(fan_in)
    x = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return x.to(like.device, like.dtype)


def support_batches(t: int, s: int, batch_size: int, epochs: int, generator: torch.Generator,
                    device: torch.device) -> Iterator[Tensor | None]:
    """Indices ``[T, B]`` of each step's support items: every epoch a random order of the S
    items per episode, cut into consecutive batches of ``batch_size`` (the last one shorter when
    S is not a multiple), as CloserLookFewShot's loop. ``batch_size`` 0 or >= S: None (the whole
    support set) once per epoch."""
    for _ in range(epochs):
        if batch_size <= 0 or batch_size >= s:
            yield None
            continue
        order = torch.rand(t, s, generator=generator).argsort(1).to(device)
        for i in range(0, s, batch_size):
            yield order[:, i:i + batch_size]


def episode_optimizer(params: list[Tensor], kind: str, lr: float, momentum: float = 0.0,
                      weight_decay: float = 0.0, dampening: float = 0.0) -> torch.optim.Optimizer:
    """SGD (with momentum, dampening, weight decay) or Adam over stacked per-episode params."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening,
                           weight_decay=weight_decay)


def episode_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Sum over episodes of each episode's mean cross-entropy: logits ``[T, B, N]``, labels
    ``[T, B]`` -> scalar (its gradient for episode t's parameters is episode t's own)."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum") / labels.shape[1]


StepHook = Callable[[str, int, torch.optim.Optimizer], None]


def fit(optimizer: torch.optim.Optimizer, loss_of: Callable[[Tensor | None], Tensor],
        batches: Iterator[Tensor | None], stage: str = "head", on_step: StepHook | None = None
        ) -> None:
    """One optimizer step per batch of support indices: ``loss_of(idx).backward()``.
    ``on_step(stage, step, optimizer)`` is called after each step (for logging and tests)."""
    for i, idx in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        loss_of(idx).backward()
        optimizer.step()
        if on_step is not None:
            on_step(stage, i, optimizer)


def take(x: Tensor, idx: Tensor | None) -> Tensor:
    """Items ``idx`` ``[T, B]`` of ``x`` ``[T, S, ...]`` (all of them when ``idx`` is None)."""
    if idx is None:
        return x
    return x.gather(1, idx.view(*idx.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:]))
