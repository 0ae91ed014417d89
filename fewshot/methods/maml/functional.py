"""MAML (Finn et al. 2017) as pure functions of parameter dicts, through ``torch.func``.

Any ``nn.Module`` works unchanged (torchvision models included): a model is called with
``torch.func.functional_call(model, (params, buffers), x)``, so nothing is monkeypatched, no private
attribute is copied and no special layer class is needed. The pieces:

- :func:`inner_loop`: SGD steps of one task on a parameter dict, with ``torch.func.grad``. Second
  order by default (the inner gradients stay differentiable functions of the outer parameters);
  ``first_order=True`` treats them as constants (``detach``).
- :func:`task_logits`: adapt on one task's support set, return its query logits (optionally after
  every step, for the multi-step loss of MAML++), optionally with a frozen encoder (ANIL). The
  inner loss is cross-entropy, or any ``loss_fn`` (:func:`mse_loss`: regression, e.g. the
  sine waves of :class:`episodes.SineTasks`).
- :func:`batched_logits`: run a one-task function over T tasks with ``torch.func.vmap`` or a plain
  loop, optionally in chunks whose graphs are rebuilt one at a time during backward (bounded memory).

BatchNorm. :func:`bn_free_buffers` replaces every BatchNorm running-stat buffer by ``None``, which
makes PyTorch's BatchNorm normalise with the statistics of the batch it sees (the support set during
adaptation, the query set at the end) in train *and* eval mode, and update no buffer: the
transductive batch statistics of the original MAML. ``model.eval()`` therefore changes nothing for
BatchNorm here (the module's running buffers are never read nor written); dropout still follows
the module's mode. Per-step running statistics (MAML++), inductive at evaluation, are the
alternative: pass a :class:`~fewshot.methods.maml.step_norms.StepStatistics` as ``stats`` (see that module).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.checkpoint import checkpoint

from .norms import DecomposedNorms
from .step_norms import BN_STATS, BatchStatRecorder, StepStatistics

Params = dict[str, Tensor]
LRs = Mapping[str, Tensor | float]
Buffers = Mapping[str, Tensor | None] | Callable[[int], Mapping[str, Tensor | None]]


def bn_free_buffers(module: nn.Module) -> dict[str, Tensor | None]:
    """The module's buffers with BatchNorm running statistics replaced by ``None`` (see the module
    docstring): pass as the buffers of :func:`functional_call` for transductive batch statistics."""
    return {name: (None if name.rsplit(".", 1)[-1] in BN_STATS else b)
            for name, b in module.named_buffers()}


def step_lr(lrs: LRs | float, name: str, step: int) -> Tensor | float:
    """Inner learning rate of parameter ``name`` at inner step ``step``.

    ``lrs`` is one float for all, or per parameter a float or a tensor ``[S]`` of per-step rates
    (Meta-SGD / MAML++ style, learned when the tensors require grad); steps beyond ``S`` use the
    last rate.
    """
    if isinstance(lrs, (int, float)):
        return lrs
    lr = lrs[name]
    if isinstance(lr, Tensor) and lr.dim() > 0:
        return lr[min(step, lr.shape[0] - 1)]
    return lr


def inner_loop(model: nn.Module, params: Params, buffers: Buffers | None, x: Tensor, y: Tensor,
               lrs: LRs | float, steps: int, first_order: bool = False,
               adapt: Sequence[str] | None = None,
               loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
               recorder: BatchStatRecorder | None = None) -> list[Params]:
    """Adapt ``params`` to one task with ``steps`` steps of plain SGD on ``loss_fn(model(x), y)``.

    Args:
        params: the model's parameters by name (the ones not given are the module's own);
        buffers: buffers by name for ``functional_call``, or a function of the step index k
            giving them for the forward with the parameters after k updates (per-step
            statistics); None: :func:`bn_free_buffers` (transductive BatchNorm; buffers that
            BatchNorm would update in place cannot be passed as they are, since
            ``torch.func.grad`` forbids mutating them).
        x: support inputs ``[S, ...]``; y: support labels ``[S]``.
        lrs: inner learning rate(s), see :func:`step_lr`.
        first_order: detach the inner gradients (first-order MAML).
        adapt: names of the adapted parameters (default: all of ``params``).
        recorder: a :class:`~fewshot.methods.maml.step_norms.BatchStatRecorder` (active around the call);
            the batch statistics recorded inside each ``grad`` are handed out through it.
    Returns:
        the full parameter dicts after step 1, ..., ``steps`` (``[]`` for 0 steps).
    """
    names = list(params) if adapt is None else list(adapt)
    if not callable(buffers):
        fixed = bn_free_buffers(model) if buffers is None else buffers
        buffers = lambda k: fixed  # noqa: E731
    fast, history = dict(params), []
    for step in range(steps):
        def support_loss(sub: Params, fast: Params = fast, bufs: Mapping = buffers(step)
                         ) -> tuple[Tensor, list[Tensor]]:
            start = len(recorder.values) if recorder is not None else 0
            loss = loss_fn(functional_call(model, ({**fast, **sub}, bufs), (x,)), y)
            if recorder is None:
                return loss, []
            records = recorder.values[start:]  # handed out of grad as outputs, not leaked
            del recorder.values[start:]
            return loss, records

        grads, records = grad(support_loss, has_aux=True)({k: fast[k] for k in names})
        if recorder is not None:
            recorder.values.extend(records)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = {**fast, **{k: fast[k] - step_lr(lrs, k, step) * grads[k] for k in names}}
        history.append(fast)
    return history


def mse_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error for regression tasks: prediction ``[S, D]`` against target ``[S, D]``, or
    ``[S, 1]`` against ``[S]`` (one output, as :class:`episodes.SineTasks`)."""
    return F.mse_loss(prediction.reshape(target.shape), target)


@dataclass(frozen=True)
class TaskConfig:
    """How one task is adapted: inner ``steps``, ``first_order``, ``all_steps`` (return query logits
    after every step, ``[steps, M, N]``, instead of only the last, ``[M, N]``), ``adapt`` (names of
    adapted parameters, None = all), ``loss_fn`` of the inner loop (``loss_fn(model(sx), sy)``;
    :func:`mse_loss` for regression)."""

    steps: int = 1
    first_order: bool = False
    all_steps: bool = False
    adapt: tuple[str, ...] | None = None
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy


def task_logits(model: nn.Module, state: Mapping[str, Params], sx: Tensor, sy: Tensor,
                qx: Tensor, config: TaskConfig, encoder: nn.Module | None = None,
                stats: StepStatistics | None = None, tags_out: list | None = None
                ) -> Tensor | tuple[Tensor, ...]:
    """Adapt on one task's support set and return its query logits.

    Args:
        state: ``{"params": model params, "lrs": inner rates (tensors, see :func:`step_lr`),
            "encoder": encoder params}`` (``"encoder"`` only with an encoder).
        sx: support ``[S, C, H, W]`` (or any ``[S, ...]`` the model takes); sy: ``[S]`` in 0..N-1
            (float targets for regression, with ``config.loss_fn``); qx: queries ``[M, ...]``.
        encoder: optional frozen feature extractor run once on sx and qx before the adapted
            ``model`` (ANIL: the encoder is meta-learned but not adapted in the inner loop).
        stats: per-step BatchNorm statistics (:mod:`fewshot.methods.maml.step_norms`) whose root
            contains ``model`` (and ``encoder``); in evaluation they normalise the query forwards
            and the inner loop keeps the support set's batch statistics. None: transductive
            batch statistics.
        tags_out: with ``stats`` in training mode, receives the tags of the recorded statistics.
    Returns:
        ``[M, N]``, or ``[steps, M, N]`` with ``config.all_steps`` (logits after each step; the
        unadapted model's logits when ``steps`` is 0). With ``stats`` in training mode, a tuple:
        the logits, then one ``[2, C]`` tensor of batch statistics per tag in ``tags_out``.
    """
    recorder = BatchStatRecorder() if stats is not None and stats.training else None

    def buffers_of(module: nn.Module, support: bool) -> Callable[[int], Mapping[str, Tensor | None]]:
        """Buffers of ``module`` for the forward with the parameters after k updates: batch
        statistics without ``stats``, and for the support forwards in evaluation (fixed statistics
        in the inner loop make its steps overshoot, see :mod:`.step_norms`)."""
        if stats is None or (support and not stats.training):
            fixed = bn_free_buffers(module)
            return lambda k: fixed
        stats.check_modes(module)
        return lambda k: stats.buffers(module, k, recorder)

    with recorder if recorder is not None else nullcontext():
        if encoder is not None:  # the encoder is never adapted: index 0
            params = state["encoder"]
            sx = functional_call(encoder, (params, buffers_of(encoder, True)(0)), (sx,))
            qx = functional_call(encoder, (params, buffers_of(encoder, False)(0)), (qx,))
        inner, at = buffers_of(model, True), buffers_of(model, False)
        fast = inner_loop(model, state["params"], inner, sx, sy, state["lrs"], config.steps,
                          config.first_order, config.adapt, config.loss_fn,
                          recorder) or [state["params"]]
        ks = list(range(1, config.steps + 1)) or [0]  # updates behind each entry of fast
        if not config.all_steps:
            fast, ks = fast[-1:], ks[-1:]
        logits = [functional_call(model, (p, at(k)), (qx,)) for p, k in zip(fast, ks, strict=True)]
    out = torch.stack(logits) if config.all_steps else logits[0]
    if recorder is None:
        return out
    tags, values = recorder.collect(stats.sets, stats.layers)
    if tags_out is not None:
        tags_out[:] = tags
    return (out, *values)


def batched_logits(task_fn: Callable[..., Tensor | tuple[Tensor, ...]],
                   state: Mapping[str, Params], sx: Tensor, sy: Tensor, qx: Tensor,
                   use_vmap: bool | None = None, chunk_size: int | None = None
                   ) -> Tensor | tuple[Tensor, ...]:
    """Run ``task_fn(state, sx[t], sy[t], qx[t])`` for the T tasks and stack the results.

    Args:
        task_fn: returns a tensor or a tuple of tensors for one task.
        sx, sy, qx: the tasks' support images ``[T, S, ...]``, support labels ``[T, S]`` and query
            images ``[T, M, ...]``.
        use_vmap: ``torch.func.vmap`` over tasks (one batched computation; norm layers run as
            primitive ops, see :mod:`fewshot.methods.maml.norms`); False: a Python loop (for models
            that cannot be vmapped); None (default): vmap on accelerators, the loop on the CPU,
            where it measured as fast or faster with less memory (BENCHMARKS.md, Conv-4, meta-batch
            32: 1.6x faster at 1 inner step, equal at 5; the batched convolutions vmap makes of
            per-task weights run slowly there), whereas on a GPU vmap turns T small launches
            into one.
        chunk_size: process at most this many tasks at a time. When gradients flow to ``state``,
            each chunk is checkpointed: its graph is freed after the forward and rebuilt (one
            chunk at a time) during ``backward()``, so memory holds one chunk's graph, at the
            cost of a second forward. Chunked results support ``.backward()``, not
            ``torch.autograd.grad``.
    Returns:
        ``[T, *task_fn output shape]`` (a tuple of them when ``task_fn`` returns a tuple).
    """
    if use_vmap is None:
        use_vmap = sx.device.type != "cpu"

    def run(st: Mapping[str, Params], sx: Tensor, sy: Tensor, qx: Tensor
            ) -> Tensor | tuple[Tensor, ...]:
        if use_vmap:
            with DecomposedNorms():  # exact second-order norm gradients under vmap
                return vmap(task_fn, in_dims=(None, 0, 0, 0), randomness="different")(st, sx, sy,
                                                                                      qx)
        return _join([task_fn(st, *task) for task in zip(sx, sy, qx, strict=True)], torch.stack)

    t = sx.shape[0]
    if chunk_size is None or chunk_size >= t:
        return run(state, sx, sy, qx)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (or None for no chunking), got {chunk_size}")
    keys = [(group, name) for group, tensors in state.items() for name in tensors]
    values = [state[g][n] for g, n in keys]
    needs_grad = torch.is_grad_enabled() and any(v.requires_grad for v in values)

    def chunk(sx: Tensor, sy: Tensor, qx: Tensor, *flat: Tensor) -> Tensor | tuple[Tensor, ...]:
        st: dict[str, Params] = {g: {} for g in state}
        for (g, n), v in zip(keys, flat, strict=True):
            st[g][n] = v
        return run(st, sx, sy, qx)

    outs = []
    for i in range(0, t, chunk_size):
        args = (sx[i:i + chunk_size], sy[i:i + chunk_size], qx[i:i + chunk_size], *values)
        outs.append(checkpoint(chunk, *args, use_reentrant=True) if needs_grad else chunk(*args))
    return _join(outs, torch.cat)


def _join(outs: list, how: Callable[[list[Tensor]], Tensor]) -> Tensor | tuple[Tensor, ...]:
    """Stack or concatenate per-task (per-chunk) results, tensors or tuples of tensors."""
    if isinstance(outs[0], tuple):
        return tuple(how(list(parts)) for parts in zip(*outs, strict=True))
    return how(outs)


def maml_logits(model: nn.Module, params: Params, lrs: LRs | float, sx: Tensor, sy: Tensor, qx: Tensor,
                config: TaskConfig, encoder: nn.Module | None = None,
                encoder_params: Params | None = None, use_vmap: bool | None = None,
                chunk_size: int | None = None, stats: StepStatistics | None = None) -> Tensor:
    """MAML query logits of T tasks: :func:`task_logits` batched by :func:`batched_logits`.

    Args:
        params: the model's (meta-)parameters; lrs: one float, or per adapted parameter a float
            or a tensor ``[S]`` (see :func:`step_lr`); encoder, encoder_params: ANIL's frozen encoder.
        sx, sy, qx: support images ``[T, S, C, H, W]``, support labels ``[T, S]``, query images
            ``[T, M, C, H, W]``.
        use_vmap, chunk_size: see :func:`batched_logits` (None: vmap except on the CPU).
        stats: per-step BatchNorm statistics (see :mod:`fewshot.methods.maml.step_norms`; in training mode
            they are updated here, once, from the batch statistics of all T tasks); None:
            transductive batch statistics.
    Returns:
        ``[T, M, N]`` (``[T, steps, M, N]`` with ``config.all_steps``). Backpropagating a loss of
        them gives the second-order (or first-order) meta-gradient of ``params``, learned rates and
        encoder parameters.
    """
    if isinstance(lrs, (int, float)):
        lrs = dict.fromkeys(config.adapt if config.adapt is not None else params, lrs)
    lr_tensors = {k: torch.as_tensor(v, dtype=next(iter(params.values())).dtype,
                                     device=sx.device) for k, v in lrs.items()}
    state = {"params": dict(params), "lrs": lr_tensors}
    if encoder is not None:
        state["encoder"] = dict(encoder_params if encoder_params is not None
                                else encoder.named_parameters())
    tags: list = []

    def one_task(st: dict, sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor | tuple[Tensor, ...]:
        return task_logits(model, st, sx, sy, qx, config, encoder, stats, tags)

    out = batched_logits(one_task, state, sx, sy, qx, use_vmap, chunk_size)
    if not isinstance(out, tuple):
        return out
    stats.update(tags, out[1:])
    return out[0]
