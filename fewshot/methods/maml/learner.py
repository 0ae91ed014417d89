"""MAML (Finn et al. 2017) and its variants as an :class:`EpisodicLearner`: a thin wrapper of the
pure functions of :mod:`fewshot.methods.maml.functional`, trained by the one loop of
:mod:`fewshot.engine.train`.

The model is ``backbone -> nn.Linear(feat_dim, n_way)``. Head choice (``head`` option):
``"linear"`` (default, as in the paper) meta-learns a head of ``n_way`` outputs built from
``spec.options["n_way"]``; episodes of another N raise an error. ``"zero"`` starts every episode
from a zero head of the episode's N (not meta-learned; the inner loop fits it), so one model serves
any N.

Test-time inner steps (``eval_inner_steps``). Finn et al. evaluate with more steps than they train
with (appendix A.1): Omniglot 5-way trained with 1 step, tested with 3; mini-ImageNet trained with
5, tested with 10; Omniglot 20-way trained and tested with 5. Left unset, ``eval_inner_steps`` is
:func:`paper_eval_steps` of ``inner_steps``: ``max(3, 2 * inner_steps)`` (0 without inner steps),
which gives the paper's 3 and 10; for 20-way Omniglot it gives 10 where the paper used 5 (pass
``eval_inner_steps=5``). Measured on Omniglot 5-way 1-shot: 3 test steps scored 1.64 points above 1
on the same 500 episodes (paired t-test p = 4e-25; BENCHMARKS.md,
"MAML test-time steps and per-step BatchNorm").

BatchNorm (``bn`` option). ``"transductive"`` (default, the original MAML and what MAML++'s code
does at evaluation): batch statistics in training and evaluation alike (see
:mod:`fewshot.methods.maml.functional`); ``eval()`` only switches to ``eval_inner_steps`` and
detaches the meta-parameters (no meta-gradient graph is built); running statistics are never read
or updated. ``"per_step"`` (experimental, warns when built; :mod:`fewshot.methods.maml.step_norms`):
one set of running statistics per inner step, updated from batch statistics in training (the
meta-gradients are the transductive ones). In evaluation the inner loop normalises the support set
with its own batch statistics, as in training, and each query forward uses its step's running
statistics, so a query's prediction does not depend on the other queries. (Running the inner loop
on the fixed statistics too diverges: without batch statistics the
loss is no longer invariant to the scale of each conv filter, the trained inner rate overshoots,
the support loss rises and the query logits overflow within three steps; see
:mod:`~fewshot.methods.maml.step_norms`.) Measured on Omniglot 5-way 1-shot (BENCHMARKS.md,
"MAML test-time steps and per-step BatchNorm"): 81.3 % against 92.4 % for the same weights
with transductive statistics; keep the default for accuracy.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from episodes.options import check

from ...models.backbones import feature_shape, spec_backbone
from ...models.learner import EpisodicLearner, ModelSpec
from ...registry import data_field, register
from .functional import TaskConfig, maml_logits, mse_loss
from .step_norms import StepStatistics, dotted_key

PER_STEP_WARNING = (
    "bn='per_step' is experimental: queries are normalised with per-step running statistics "
    "(inductive), which scored 11 points below transductive statistics on Omniglot 5-way 1-shot "
    "(BENCHMARKS.md, 'MAML test-time steps and per-step BatchNorm'). Use bn='transductive' (the "
    "default) for accuracy.")


LOSSES = {"cross_entropy": F.cross_entropy, "mse": mse_loss}


def paper_eval_steps(inner_steps: int) -> int:
    """Test-time inner steps by default: ``max(3, 2 * inner_steps)``, or 0 with no inner steps.

    Gives Finn et al.'s test steps for 5-way Omniglot (1 -> 3) and mini-ImageNet (5 -> 10); their
    20-way Omniglot model was tested with 5 steps, not 10.
    """
    return max(3, 2 * inner_steps) if inner_steps > 0 else 0


class MAML(EpisodicLearner):
    """MAML / first-order MAML / ANIL / Meta-SGD-style learned rates / MAML++ multi-step loss.

    Args:
        backbone: any module mapping ``[B, C, H, W]`` to features ``[B, feat_dim]``.
        inner_steps, eval_inner_steps: inner SGD steps in training and evaluation (None:
            :func:`paper_eval_steps` of ``inner_steps``, the paper's test-time steps).
        inner_lr: inner learning rate (initial value when ``learn_lr``).
        first_order: first-order meta-gradients. learn_lr: one learned rate per adapted parameter
            tensor and per step (MAML++ LSLR; evaluation steps beyond ``inner_steps`` reuse the
            last). multi_step_loss: MAML++ loss over the query logits after every step, weights
            annealed linearly from uniform to the last step over ``msl_anneal`` iterations.
        anil: adapt only the head (the backbone runs once per task, unadapted).
        bn: ``"transductive"`` or ``"per_step"`` (experimental, warns) BatchNorm statistics
            (module docstring).
        use_vmap: tasks in parallel with vmap (True), a loop (False), or None: vmap except on
            the CPU, where the loop is faster (:func:`fewshot.methods.maml.functional.batched_logits`);
            chunk_size: tasks per chunk.
        compile: run the adaptation and query forward (:func:`maml_logits`) through
            ``torch.compile`` (off by default: the first call compiles for minutes, and whether
            it pays is measured by ``benchmarks/peers.py maml``, BENCHMARKS.md, "speed against
            the peers").
        loss: ``"cross_entropy"`` (classification) or ``"mse"`` (regression: the head's
            ``n_way`` outputs are the prediction, the targets are floats, e.g.
            :class:`episodes.SineTasks` with ``n_way=1``), in the inner loop and the outer loss.
    """

    grad_at_eval = True
    channels_last_cpu = False  # its fast weights come back NCHW: slower (fewshot.engine.precision)
    gradient_sync = "all_reduce"  # the meta-gradient is all-reduced after the step's backward

    def __init__(self, backbone: nn.Module, feat_dim: int, n_way: int = 5, inner_steps: int = 1,
                 eval_inner_steps: int | None = None, inner_lr: float = 0.4,
                 first_order: bool = False, learn_lr: bool = False, multi_step_loss: bool = False,
                 msl_anneal: int = 5000, anil: bool = False, head: str = "linear",
                 bn: str = "transductive", use_vmap: bool | None = None,
                 chunk_size: int | None = None, loss: str = "cross_entropy",
                 compile: bool = False) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.loss_fn = LOSSES[loss]
        if head not in ("linear", "zero"):
            raise ValueError(f"head must be 'linear' or 'zero', got {head!r}")
        if bn not in ("transductive", "per_step"):
            raise ValueError(f"bn must be 'transductive' or 'per_step', got {bn!r}")
        if inner_steps < 1 and (multi_step_loss or learn_lr):
            raise ValueError("multi_step_loss and learn_lr need inner_steps >= 1")
        self.net = nn.Sequential(OrderedDict(backbone=backbone, head=nn.Linear(feat_dim, n_way)))
        self.head_kind = head
        if head == "zero":
            nn.init.zeros_(self.net.head.weight), nn.init.zeros_(self.net.head.bias)
            self.net.head.requires_grad_(False)
        self.inner_steps = inner_steps
        self.eval_inner_steps = (paper_eval_steps(inner_steps) if eval_inner_steps is None
                                 else eval_inner_steps)
        self.inner_lr, self.first_order, self.learn_lr = inner_lr, first_order, learn_lr
        self.multi_step_loss, self.msl_anneal, self.anil = multi_step_loss, msl_anneal, anil
        self.use_vmap, self.chunk_size = use_vmap, chunk_size
        self.logits_fn = torch.compile(maml_logits) if compile else maml_logits
        adapted = self.adapted_module()
        self.lrs = nn.ParameterDict({dotted_key(n): nn.Parameter(torch.full((inner_steps,), inner_lr))
                                     for n, _ in adapted.named_parameters()} if learn_lr else {})
        # sets 0..inner_steps: the forwards with the parameters after 0..inner_steps updates
        self.bn_stats = StepStatistics(self.net, inner_steps + 1) if bn == "per_step" else None
        if bn == "per_step":
            warnings.warn(PER_STEP_WARNING, UserWarning, stacklevel=2)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self._step_logits: Tensor | None = None

    @property
    def backbone(self) -> nn.Module:
        """The network's feature extractor (``net.backbone``; the head follows it)."""
        return self.net.backbone

    @property
    def fixed_way(self) -> int | None:
        """The number of classes every episode must have (a linear head's outputs), or None
        when any number works (``head=zero``)."""
        return self.net.head.out_features if self.head_kind == "linear" else None

    def adapted_module(self) -> nn.Module:
        """The module adapted in the inner loop: the head (ANIL) or the whole net."""
        return self.net.head if self.anil else self.net

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                ) -> Tensor:
        """support_x ``[T, N*K, C, H, W]``, support_y ``[T, N*K]``, query_x ``[T, M, C, H, W]``
        -> query logits ``[T, M, N]`` after adapting on each task's support set."""
        head = self.net.head
        if self.head_kind == "linear" and n_way != head.out_features:
            raise ValueError(f"this MAML head has {head.out_features} outputs but the episodes are "
                             f"{n_way}-way: build it with option n_way={n_way}, or head=zero")
        model = self.adapted_module()
        params = dict(model.named_parameters())
        if self.head_kind == "zero":
            prefix = "" if self.anil else "head."
            w = head.weight.new_zeros(n_way, head.in_features)
            params.update({prefix + "weight": w, prefix + "bias": w.new_zeros(n_way)})
        lrs = ({n: self.lrs[dotted_key(n)] for n in params} if self.learn_lr
               else dict.fromkeys(params, self.inner_lr))
        enc = dict(self.net.backbone.named_parameters()) if self.anil else None
        if self.loss_fn is mse_loss and not support_y.is_floating_point():
            raise ValueError("a MAML built with loss='mse' regresses float targets (e.g. "
                             "episodes.SineTasks), but these episodes have class labels: build it "
                             "with loss='cross_entropy'")
        steps = self.inner_steps if self.training else self.eval_inner_steps
        msl = self.training and self.multi_step_loss
        if not self.training:  # evaluation: no meta-gradient graph
            params, enc = _detached(params), _detached(enc)
            lrs = {n: v.detach() if isinstance(v, Tensor) else v for n, v in lrs.items()}
        logits = self.logits_fn(model, params, lrs, support_x, support_y, query_x,
                                TaskConfig(steps, self.first_order, all_steps=msl,
                                           loss_fn=self.loss_fn),
                                self.net.backbone if self.anil else None, enc, self.use_vmap,
                                self.chunk_size, self.bn_stats)
        if msl:
            self._step_logits, logits = logits, logits[:, -1]
        return logits

    def step_weights(self) -> Tensor:
        """MAML++ multi-step loss weights ``[inner_steps]`` at the current iteration."""
        s = self.inner_steps
        frac = min(float(self.iteration) / max(self.msl_anneal, 1), 1.0)
        final = torch.zeros(s)
        final[-1] = 1.0
        return (1 - frac) * torch.full((s,), 1.0 / s) + frac * final

    def end_step(self) -> None:
        """Advance the multi-step loss annealing by one meta-iteration."""
        self.iteration += 1

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """The loss (cross-entropy or mean squared error) of the final logits ``[T, M, N]``
        against ``query_y`` ``[T, M]``; with the multi-step loss in training, the weighted sum over
        the logits after every inner step (the iteration counter advances in :meth:`end_step`,
        once per optimizer step however many chunks the step has)."""
        step_logits, self._step_logits = self._step_logits, None
        if step_logits is None or not self.training:
            return self.loss_fn(logits.flatten(0, 1), query_y.flatten(0, 1))
        weights = self.step_weights().to(logits.device)
        per_step = torch.stack([self.loss_fn(step_logits[:, k].flatten(0, 1), query_y.flatten(0, 1))
                                for k in range(step_logits.shape[1])])
        return (per_step * weights).sum()


def _detached(params: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    return None if params is None else {k: v.detach() for k, v in params.items()}


@dataclass
class MAMLConfig:
    """Options of ``--method maml``: the arguments of :class:`MAML` (``vmap`` for ``use_vmap``)
    and ``hidden`` (Conv-4 width; None: the backbone's default).

    ``eval_inner_steps`` left unset becomes :func:`paper_eval_steps` of ``inner_steps`` (so the
    spec records the number used): ``max(3, 2 * inner_steps)``, Finn et al.'s test-time steps for
    5-way Omniglot (1 -> 3) and mini-ImageNet (5 -> 10); for 20-way Omniglot the paper tested with
    5 (``eval_inner_steps=5``). ``bn="per_step"`` is experimental (see the module docstring).
    """

    n_way: int = data_field("way", 5)
    inner_steps: int = 1
    eval_inner_steps: int | None = None
    inner_lr: float = 0.4
    first_order: bool = False
    learn_lr: bool = False
    multi_step_loss: bool = False
    msl_anneal: int = 5000
    anil: bool = False
    head: Literal["linear", "zero"] = "linear"
    bn: Literal["transductive", "per_step"] = "transductive"
    chunk_size: int | None = None
    vmap: bool | None = None
    hidden: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        check(self.n_way >= 2, "n_way", ">= 2", self.n_way)
        check(self.inner_steps >= 0, "inner_steps", ">= 0", self.inner_steps)
        if self.eval_inner_steps is None:
            self.eval_inner_steps = paper_eval_steps(self.inner_steps)
        check(self.eval_inner_steps is None or self.eval_inner_steps >= 0, "eval_inner_steps",
              ">= 0", self.eval_inner_steps)
        check(self.inner_lr >= 0, "inner_lr", ">= 0", self.inner_lr)
        check(self.msl_anneal >= 0, "msl_anneal", ">= 0", self.msl_anneal)
        check(self.chunk_size is None or self.chunk_size >= 1, "chunk_size", ">= 1",
              self.chunk_size)
        check(self.hidden is None or self.hidden >= 1, "hidden", ">= 1 (conv4 width)",
              self.hidden)


@register("maml", MAMLConfig, "episodic",
          "MAML (Finn et al. 2017): functional second- or first-order meta-gradients over a "
          "parameter dict (any nn.Module); MAML++, Meta-SGD, ANIL options")
def build_maml(spec: ModelSpec, config: MAMLConfig) -> MAML:
    options = asdict(config)
    hidden, use_vmap = options.pop("hidden"), options.pop("vmap")
    backbone = spec_backbone(spec, hidden)
    dim = feature_shape(backbone, spec.in_channels, spec.image_size).numel()
    return MAML(backbone, dim, use_vmap=use_vmap, **options)
