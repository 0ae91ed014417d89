"""Per-step BatchNorm running statistics for MAML (MAML++'s "BNRS", Antoniou et al. 2019).

Why. With transductive batch statistics (the original MAML,
:func:`~fewshot.methods.maml.functional.bn_free_buffers`) every forward pass normalises with the
statistics of the batch it sees, so a query's prediction depends on the other queries of its task,
and the parameters after 0, 1, ..., S inner updates all share one normalisation although their
activations differ. Per-step statistics keep one set of running mean and variance per *forward
index* k = 0..S, where k counts the inner updates the parameters have had: the support forward of
inner step k+1 uses set k, the query forward after S updates uses set S (after k updates, set k,
with the multi-step loss).

Training (``StepStatistics.training``): every forward still normalises with its own batch
statistics (so meta-gradients equal the transductive ones), and the batch mean and unbiased
variance of every BatchNorm layer are recorded, averaged over the records of each set (support
and query batches alike) and over the T tasks of the meta-batch, and folded into set k with the
layer's momentum (0.1 when the layer's is None) once per meta-batch: ``running = (1 - m) *
running + m * batch``.

Evaluation: the inner loop normalises the support set with its own batch statistics, as in
training, and the query forward after k updates normalises with set ``min(k, S)`` (evaluation
steps beyond the trained ones reuse the last set): BatchNorm runs in eval mode, predictions are
inductive (a query's logits do not depend on the other queries) and nothing is recorded or
updated. The sets of the support forwards (0..S-1) are recorded in training but, as in MAML++'s
code (which normalises with batch statistics at evaluation too), not used to normalise.

Why not the running statistics in the inner loop as well.
Measured on Omniglot 5-way 1-shot (BENCHMARKS.md, "MAML test-time steps and per-step
BatchNorm": Conv-4 of width 32, 716 meta-iterations, 200 test episodes): the stored statistics
describe the support activations
(support batch variance / running variance 0.93-1.08 per layer, mean offsets under 0.07 running
standard deviations), yet with them in the inner loop the support loss rises at the trained rate
0.4 instead of falling (median 1.63, 4.16, 564, then overflow: the query logits are inf from step
3 and every query gets one class, exactly 20 %), each update larger than the last (0.27, 1.28, 35
times the conv weights' norm); at rate 0.1 it still rises after the first step and accuracy falls
from 61 % to 34 % by step 5. The statistics are not the problem, the inner loop is: with batch
statistics the loss does not depend on the scale of a filter before BatchNorm and its gradient
shrinks as the filter grows, with fixed statistics neither holds (tested), so the step the
initialisation was meta-trained to take becomes a different step on a different loss. Support
normalised by its own statistics and queries by the running ones: 81.3 % with 3 test steps, 78.0 %
with 1, against 92.4 % and 90.7 % for the same weights with transductive statistics (500
episodes).

Nothing in the model changes: the sets live in a :class:`StepStatistics` module (saved with the
learner) and reach the model's own BatchNorm layers as the ``running_mean``/``running_var``
buffers of ``torch.func.functional_call``. The model's own running buffers are never read or
written. Only BatchNorm layers with ``track_running_stats=True`` are covered; InstanceNorm layers
with running statistics are refused.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .norms import BN_ARGS, IN_ARGS, batch_norm_with_stats, bind_args

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm's statistic buffers
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
Tag = tuple[str, int]  # (layer name in the root module, set index k)


def dotted_key(name: str) -> str:
    """A dotted module path as an attribute or ``ParameterDict`` key (``a.b`` -> ``a__b``)."""
    return name.replace(".", "__")


class StepStatistics(nn.Module):
    """Running statistics of every BatchNorm layer of ``root``, ``sets`` of them per layer.

    Buffers ``mean__<layer>`` and ``var__<layer>``, ``[sets, C]`` (initialised to 0 and 1 as
    BatchNorm's). Layers are named as in ``root``, which is kept as a plain reference (not a
    submodule: a learner owning both registers and saves it once).
    """

    def __init__(self, root: nn.Module, sets: int) -> None:
        super().__init__()
        if sets < 1:
            raise ValueError(f"sets must be >= 1, got {sets}")
        self.sets = sets
        self._root = (root,)
        self.layers: list[str] = []
        self.momentum: dict[str, float] = {}
        for name, m in root.named_modules():
            mean = dict(m.named_buffers(recurse=False)).get("running_mean")
            if mean is None:
                continue
            if isinstance(m, INSTANCE_NORMS):
                raise ValueError(f"per-step statistics cover BatchNorm layers only; {name!r} is "
                                 f"{type(m).__name__} with track_running_stats=True: set it to "
                                 "False, or use bn='transductive'")
            self.layers.append(name)
            self.momentum[name] = 0.1 if getattr(m, "momentum", None) is None else m.momentum
            self.register_buffer(f"mean__{dotted_key(name)}", mean.new_zeros(sets, mean.shape[0]))
            self.register_buffer(f"var__{dotted_key(name)}", mean.new_ones(sets, mean.shape[0]))
        if not self.layers:
            raise ValueError("per-step BatchNorm statistics need BatchNorm layers with "
                             "track_running_stats=True, and this model has none: use "
                             "bn='transductive'")

    def stat(self, kind: str, layer: str) -> Tensor:
        """``[sets, C]`` running ``kind`` ("mean" or "var") of ``layer``."""
        return getattr(self, f"{kind}__{dotted_key(layer)}")

    def buffers(self, module: nn.Module, k: int, recorder: BatchStatRecorder | None = None
                ) -> dict[str, Tensor | None]:
        """Buffers of ``module`` (the root module or one of its submodules) for the forward at index
        ``k``: its own buffers, with every BatchNorm's running mean and variance replaced by set
        ``min(k, sets - 1)`` and ``num_batches_tracked`` by None. With a ``recorder`` (training),
        the set's tensors are registered with it so that the layer's batch statistics are
        recorded (they are then only identifiers: BatchNorm normalises with batch statistics).
        """
        prefix = next((n for n, m in self._root[0].named_modules() if m is module), None)
        if prefix is None:
            raise ValueError("module is not a submodule of the statistics' root module")
        prefix = prefix + "." if prefix else ""
        k = min(k, self.sets - 1)
        out: dict[str, Tensor | None] = {}
        for name, b in module.named_buffers():
            layer, _, leaf = (prefix + name).rpartition(".")
            if leaf not in BN_STATS:
                out[name] = b
            elif leaf == "num_batches_tracked" or layer not in self.momentum:
                out[name] = None
            else:
                view = self.stat("mean" if leaf == "running_mean" else "var", layer)[k]
                if recorder is not None:
                    recorder.tag(view, (layer, k))
                out[name] = view
        return out

    def check_modes(self, module: nn.Module) -> None:
        """The BatchNorm layers of ``module`` must be in the statistics' mode: train (batch
        statistics, recorded) or eval (the sets; in train mode BatchNorm would update them in
        place)."""
        if any(m.training != self.training for m in module.modules()
               if "running_mean" in dict(m.named_buffers(recurse=False))):
            raise ValueError(f"the per-step statistics are in {'train' if self.training else 'eval'}"
                             " mode but the model's BatchNorm layers are not: call train() or "
                             "eval() on both")

    @torch.no_grad()
    def update(self, tags: list[Tag], stats: tuple[Tensor, ...]) -> None:
        """Fold batch statistics into the sets: ``stats[i]`` is ``[T, 2, C]`` (mean, unbiased
        variance per task) for ``tags[i]``."""
        for (layer, k), s in zip(tags, stats, strict=True):
            m = self.momentum[layer]
            batch = s.mean(0)
            self.stat("mean", layer)[k].lerp_(batch[0].to(self.stat("mean", layer).dtype), m)
            self.stat("var", layer)[k].lerp_(batch[1].to(self.stat("var", layer).dtype), m)


class BatchStatRecorder(TorchFunctionMode):
    """While active, ``F.batch_norm`` calls whose running mean was tagged by
    :meth:`StepStatistics.buffers` normalise with batch statistics (written in primitive ops, exact
    to any order under vmap, see :mod:`fewshot.methods.maml.norms`), update nothing in place, and
    record the batch mean and unbiased variance (detached) in :attr:`values`, tag order in
    :attr:`tags`. Functions transformed by ``torch.func`` must hand their records out as outputs
    (see :meth:`collect`); untagged calls pass through."""

    def __init__(self) -> None:
        super().__init__()
        self._tags: dict[int, tuple[Tag, Tensor]] = {}  # id(view) -> (tag, view kept alive)
        self.tags: list[Tag] = []
        self.values: list[Tensor] = []

    def tag(self, view: Tensor, tag: Tag) -> None:
        self._tags[id(view)] = (tag, view)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            a = bind_args(BN_ARGS, args, kwargs)
            hit = self._tags.get(id(a.get("running_mean")))
            if hit is not None and a.get("training", False):
                x = a["input"]
                y, mean, var = batch_norm_with_stats(x, a.get("weight"), a.get("bias"),
                                                     a.get("eps", 1e-5))
                n = x.numel() // x.shape[1]  # values per channel: unbiased = biased * n / (n - 1)
                self.tags.append(hit[0])
                self.values.append(torch.stack([mean, var * (n / (n - 1))]).detach())
                return y
        elif func is F.instance_norm:
            a = bind_args(IN_ARGS, args, kwargs)
            if id(a.get("running_mean")) in self._tags:
                raise ValueError("per-step statistics cover BatchNorm only (an InstanceNorm "
                                 "layer has running statistics): use bn='transductive'")
        return func(*args, **kwargs)

    def collect(self, sets: int, layers: list[str]) -> tuple[list[Tag], tuple[Tensor, ...]]:
        """Average the records by tag and clear them: the tags recorded (in ``layers`` x ``sets``
        order) and one ``[2, C]`` tensor (mean, unbiased variance) per tag."""
        groups: dict[Tag, list[Tensor]] = defaultdict(list)
        for tag, v in zip(self.tags, self.values, strict=True):
            groups[tag].append(v)
        self.tags, self.values = [], []
        order = [(layer, k) for layer in layers for k in range(sets) if (layer, k) in groups]
        return order, tuple(torch.stack(groups[t]).mean(0) for t in order)
