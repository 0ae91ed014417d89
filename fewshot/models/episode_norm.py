"""BatchNorm statistics per episode, so that batching T episodes changes nothing but speed.

The papers' code meta-trains on one episode per step, so every BatchNorm normalises with the
statistics of one episode's images. Run T episodes through one forward pass and a plain
BatchNorm would mix the T episodes' statistics; split the T episodes into chunks (gradient
accumulation, :mod:`fewshot.engine.train`) and it would mix different ones. :class:`PerEpisodeNorm`
is a ``TorchFunctionMode`` that, while active, computes every ``F.batch_norm`` that uses batch
statistics on each of the T equal, consecutive slices of its batch on its own (episode-major
layouts: ``[T * B_episode, C, ...]``). A step on T episodes is then exactly T one-episode
forwards, however it is chunked.

Running statistics are updated once per call with the mean over the episodes of their batch
mean and unbiased variance (for T = 1 exactly what ``nn.BatchNorm`` does). Inside
:func:`deferred_running_stats` the updates of all calls are collected and applied once when it
exits, with the mean over every episode seen: a step split into chunks then updates the running
statistics exactly as the unsplit step does. A step whose forward passes its images through the
same BatchNorm more than once (the episodes, then their rotated images for an auxiliary loss)
names each pass (``PerEpisodeNorm(..., name=...)``): each pass's updates are averaged on their
own and applied one after the other, in the order the unsplit step makes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")


def bind_args(signature: tuple[str, ...], args: tuple, kwargs: dict) -> dict:
    """The arguments of a ``__torch_function__`` call by name (``signature``: positional order)."""
    values = dict(zip(signature, args, strict=False))
    values.update(kwargs or {})
    return values


class RunningStats:
    """Running-statistic updates collected over the calls of one step, applied by :meth:`apply`."""

    def __init__(self) -> None:
        # (id(running_mean), pass name) -> [mean, var, momentum, sums, n], in first-seen order
        self.pending: dict[tuple[int, str], list] = {}

    def add(self, running_mean: Tensor, running_var: Tensor, momentum: float,
            mean_sum: Tensor, var_sum: Tensor, episodes: int, name: str = "") -> None:
        """Collect the sums over ``episodes`` episodes of their means and variances ``[C]`` for
        the running statistics of one BatchNorm in the forward pass ``name``."""
        key = (id(running_mean), name)
        entry = self.pending.get(key)
        if entry is None:
            self.pending[key] = [running_mean, running_var, momentum, mean_sum, var_sum, episodes]
        else:
            entry[2] = momentum
            entry[3] = entry[3] + mean_sum
            entry[4] = entry[4] + var_sum
            entry[5] += episodes

    def apply(self) -> None:
        with torch.no_grad():
            for running_mean, running_var, momentum, mean_sum, var_sum, n in self.pending.values():
                update_running(running_mean, running_var, momentum, mean_sum / n, var_sum / n)
        self.pending.clear()


def update_running(running_mean: Tensor, running_var: Tensor | None, momentum: float,
                   mean: Tensor, var: Tensor) -> None:
    """``running = (1 - momentum) * running + momentum * batch`` (``nn.BatchNorm``'s rule)."""
    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
    if running_var is not None:
        running_var.mul_(1 - momentum).add_(var.to(running_var.dtype), alpha=momentum)


def per_episode_batch_norm(x: Tensor, episodes: int, weight: Tensor | None, bias: Tensor | None,
                           eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm of ``x`` ``[T * b, C, *S]`` with statistics of each of the T slices.

    Returns the output (``x``'s shape and dtype) and each episode's mean and unbiased variance
    ``[T, C]`` (detached; computed in float32, or float64 for a float64 ``x``).
    """
    if x.shape[0] % episodes:
        raise ValueError(f"a BatchNorm input of {x.shape[0]} items cannot be split into "
                         f"{episodes} episodes: per-episode BatchNorm needs episode-major batches")
    dtype = torch.promote_types(x.dtype, torch.float32)  # half precision: statistics in float32
    xg = x.to(dtype).view(episodes, x.shape[0] // episodes, *x.shape[1:])
    dims = [1, *range(3, xg.dim())]
    var, mean = torch.var_mean(xg, dims, correction=0, keepdim=True)
    shape = [1, 1, -1] + [1] * (x.dim() - 2)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(dtype).reshape(shape)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.to(dtype).reshape(shape)
    y = torch.addcmul(shift, xg, scale).view_as(x).to(x.dtype)
    n = xg[0].numel() // x.shape[1]
    with torch.no_grad():
        unbiased = var.flatten(1) * (n / max(n - 1, 1))
    return y, mean.detach().flatten(1), unbiased


class PerEpisodeNorm(TorchFunctionMode):
    """While active, BatchNorm with batch statistics normalises each of ``episodes`` consecutive
    slices of its batch on its own (see the module docstring). Calls that normalise with running
    statistics (evaluation) go to PyTorch unchanged.

    Args:
        episodes: T, the episodes in every batch (each BatchNorm input is ``[T * b, C, ...]``).
        running: where running-statistic updates go (None: applied at once).
        name: the forward pass of the step the updates belong to (see the module docstring).
    """

    def __init__(self, episodes: int, running: RunningStats | None = None, name: str = "") -> None:
        super().__init__()
        self.episodes, self.running, self.name = episodes, running, name

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.batch_norm:
            return func(*args, **kwargs)
        a = bind_args(BN_ARGS, args, kwargs)
        if not a.get("training", False):
            return func(*args, **kwargs)
        y, mean, var = per_episode_batch_norm(a["input"], self.episodes, a.get("weight"),
                                              a.get("bias"), a.get("eps", 1e-5))
        running_mean, running_var = a.get("running_mean"), a.get("running_var")
        momentum = a.get("momentum", 0.1)
        if running_mean is not None:
            if self.running is not None:
                self.running.add(running_mean, running_var, momentum, mean.sum(0), var.sum(0),
                                 self.episodes, self.name)
            else:
                with torch.no_grad():
                    update_running(running_mean, running_var, momentum, mean.mean(0),
                                   var.mean(0))
        return y


@contextmanager
def deferred_running_stats(model: nn.Module, calls: int) -> Iterator[RunningStats]:
    """Collect the running-statistic updates of ``calls`` forward passes of ``model`` (the
    chunks of one step) and apply them once on exit, as one unsplit pass would; BatchNorm's
    ``num_batches_tracked`` counts what one chunk counts (the step once per pass through it)."""
    stats = RunningStats()
    previous = getattr(model, "_running_stats", None)
    model._running_stats = stats
    tracked = [(m.num_batches_tracked, m.num_batches_tracked.clone()) for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and m.num_batches_tracked is not None]
    try:
        yield stats
    finally:
        model._running_stats = previous
    stats.apply()
    if calls > 1:
        for counter, before in tracked:
            counter.copy_(before + (counter - before) // calls)
