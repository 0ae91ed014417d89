"""Pure functions of episodes and batches, shared by the methods, heads and self-supervised
learners that build on them: prototypes and the distances to them, accuracy, rotated copies.

Every function is batched over the episodes of a step: tensors ``[T, ...]`` with T episodes, S
support items, M queries, N classes and D features, as each docstring states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def prototypes(support: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """Class means: support ``[T, S, D]``, labels ``[T, S]`` in 0..N-1 -> ``[T, N, D]``."""
    onehot = F.one_hot(support_y, n_way).to(support.dtype)  # [T, S, N]
    return onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)


def euclidean_logits(query: Tensor, protos: Tensor) -> Tensor:
    """Negative squared Euclidean distances: query ``[T, M, D]``, protos ``[T, N, D]`` ->
    ``[T, M, N]``."""
    return -(query.pow(2).sum(-1, keepdim=True) - 2 * query @ protos.transpose(1, 2)
             + protos.pow(2).sum(-1).unsqueeze(1))


def cosine_logits(query: Tensor, protos: Tensor, scale: float | Tensor = 10.0) -> Tensor:
    """Scaled cosine similarities: ``[T, M, D]``, ``[T, N, D]`` -> ``[T, M, N]``."""
    return scale * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)


def protonet_logits(support: Tensor, support_y: Tensor, query: Tensor, n_way: int,
                    distance: str = "euclidean", scale: float | Tensor | None = None) -> Tensor:
    """ProtoNet logits from features: support ``[T, S, D]``, query ``[T, M, D]`` -> ``[T, M, N]``.

    ``scale`` multiplies the logits (None: 1 for Euclidean, 10 for cosine)."""
    protos = prototypes(support, support_y, n_way)
    if distance == "euclidean":
        logits = euclidean_logits(query, protos)
        return logits if scale is None else scale * logits
    if distance == "cosine":
        return cosine_logits(query, protos, 10.0 if scale is None else scale)
    raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy of ``[B, K]`` logits against ``[B]`` labels (a scalar tensor)."""
    return (logits.argmax(-1) == labels).float().mean()


def rotate_batch(x: Tensor, episodes: int = 1) -> tuple[Tensor, Tensor]:
    """The four rotations of every image (RotNet, Gidaris et al. 2018): ``[B, C, H, W]`` (square)
    -> images ``[4B, C, H, W]`` (all images turned by 0, then 90, 180, 270 degrees
    counter-clockwise) and their labels ``[4B]`` (0, 1, 2, 3: the number of quarter turns).

    ``episodes``: ``x`` holds T consecutive episodes of ``B / T`` images; the result is then
    episode-major too (episode t's images in all four rotations, then episode t + 1's)."""
    per = x.reshape(episodes, -1, *x.shape[1:])  # [T, B / T, C, H, W]
    rotated = torch.cat([torch.rot90(per, k, (3, 4)) for k in range(4)], 1).flatten(0, 1)
    labels = torch.arange(4, device=x.device).repeat_interleave(per.shape[1]).repeat(episodes)
    return rotated, labels
