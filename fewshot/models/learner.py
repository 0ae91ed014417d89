"""The interface every few-shot learner implements (the registry that builds them by name is
:mod:`fewshot.registry`).

A learner maps an episode batch's support set and queries to query logits ``[T, N*Q, N]``; the one
training loop (:mod:`fewshot.engine.train`) and evaluation (:mod:`fewshot.engine.evaluate`) work
with any of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .episode_norm import PerEpisodeNorm


@dataclass
class ModelSpec:
    """Everything needed to rebuild a learner (stored in every checkpoint).

    Attributes:
        method: registered method name ("protonet", ...).
        backbone: backbone name ("conv4", "resnet12").
        in_channels: image channels (1 grayscale, 3 RGB); image_size: H = W of the images.
        options: method-specific keyword arguments.
        normalize: ``{"mean": [...], "std": [...]}`` the backbone applies to its ``[0, 1]`` input
            images first, or None (:mod:`fewshot.models.input_norm`; checkpoints from before it have
            none).
    """

    method: str
    backbone: str = "conv4"
    in_channels: int = 1
    image_size: int = 28
    options: dict[str, Any] = field(default_factory=dict)
    normalize: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EXPECTED = ("support_x [T, N*K, C, H, W], support_y [T, N*K] and query_x [T, M, C, H, W] (a batch "
            "of T episodes), or [N*K, C, H, W], [N*K] and [M, C, H, W] (one episode)")


def check_episode_inputs(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> bool:
    """Whether the inputs are one episode without the leading episode dimension (labels
    ``[N*K]``) rather than a batch (labels ``[T, N*K]``); ``ValueError`` naming the expected
    shapes when they fit neither (inputs ``[*, 1]`` of regression tasks are checked the same
    way: support_x has the labels' shape and then the input's)."""
    single = support_y.dim() == 1
    if support_y.dim() not in (1, 2) or support_x.shape[:support_y.dim()] != support_y.shape \
            or query_x.dim() != support_x.dim() or support_x.dim() <= support_y.dim() \
            or (not single and query_x.shape[0] != support_x.shape[0]) \
            or query_x.shape[support_y.dim() + 1:] != support_x.shape[support_y.dim() + 1:]:
        raise ValueError(f"a learner takes {EXPECTED}; got support_x {list(support_x.shape)}, "
                         f"support_y {list(support_y.shape)}, query_x {list(query_x.shape)}")
    return single


class EpisodicLearner(nn.Module, ABC):
    """Base of all learners: ``forward(support_x, support_y, query_x, n_way) -> logits``.

    ``grad_at_eval`` is True for learners that need autograd even when evaluating (MAML's inner
    loop); evaluation then runs with gradients enabled. ``grad_clip`` is the gradient-norm limit the
    training loop applies (through :meth:`clip_gradients`) when its own ``grad_clip`` is None
    (None: no clipping).

    ``per_episode_norm``: the learner's layouts are episode-major (every tensor its modules see
    is ``[T * b, ...]``, episode by episode), so BatchNorm with batch statistics can normalise
    each episode on its own (:mod:`fewshot.models.episode_norm`): T batched episodes then train exactly
    as T single episodes, and a step split into chunks as the whole step. ``step_statistics``:
    BatchNorm statistics over all the step's episodes together instead (the training loop then
    refuses to split a step into chunks).

    ``gradient_sync``: how a distributed run (:mod:`fewshot.engine.distributed`) sums the ranks'
    gradients: ``"ddp"`` (DistributedDataParallel) or ``"all_reduce"`` (one all-reduce after the
    backward, for learners whose forward DDP's hooks do not follow, such as MAML's functional
    inner loop).

    ``one_process``: why the learner trains in one process only (a loss over the whole batch, a
    queue or per-image state that splitting the batch across ranks would change), or None: the
    training loop and the CLI refuse to run it on several (:func:`fewshot.engine.distributed.
    refuse_several_processes`).

    Every learner has ``backbone``: the module that maps images ``[B, C, H, W]`` to features,
    which ``--init``, ``--freeze``, the per-episode heads and weights files address (an attribute
    for most learners, a property where the learner keeps it inside another module).

    Learners whose logits come from per-image features (``features_per_image()`` True) also
    implement :meth:`embed` (images -> features) and :meth:`head` (features -> logits) with
    ``forward == head(embed(support), embed(query))``; evaluation and prediction then embed each
    image once, in memory-bounded chunks (:mod:`fewshot.engine.memory`).

    ``channels_last_cpu``: train with channels-last weights on a CPU
    (:func:`fewshot.engine.precision.use_channels_last`), where it is faster for most learners.
    """

    grad_at_eval: bool = False
    channels_last_cpu: bool = True
    grad_clip: float | None = None
    per_episode_norm: bool = False
    step_statistics: bool = False
    gradient_sync: str = "ddp"  # how a distributed run sums gradients (fewshot.engine.distributed)
    one_process: str | None = None  # why it cannot train on several processes (None: it can)

    def __call__(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                 ) -> Tensor:
        """Logits of a batch of T episodes (``[T, N*K, C, H, W]``, ``[T, N*K]``,
        ``[T, M, C, H, W]`` -> ``[T, M, N]``) or of one episode without the leading dimension
        (``[N*K, C, H, W]``, ``[N*K]``, ``[M, C, H, W]`` -> ``[M, N]``); shapes that fit neither
        raise ``ValueError`` saying what is expected."""
        single = check_episode_inputs(support_x, support_y, query_x)
        if single:
            support_x, support_y, query_x = (t.unsqueeze(0) for t in (support_x, support_y, query_x))
        with self.episode_norm(support_x.shape[0]):
            logits = super().__call__(support_x, support_y, query_x, n_way)
        return logits.squeeze(0) if single else logits

    def episode_norm(self, episodes: int, name: str = "") -> AbstractContextManager:
        """The BatchNorm mode of a forward pass over ``episodes`` episodes laid out
        episode-major: :class:`~fewshot.models.episode_norm.PerEpisodeNorm` for learners with
        ``per_episode_norm`` (plain BatchNorm for one episode whose running statistics are not
        deferred: the same result), else nothing. ``name``: the step's forward pass the
        running-statistic updates belong to (:mod:`fewshot.models.episode_norm`)."""
        running = getattr(self, "_running_stats", None)
        if not self.per_episode_norm or (episodes == 1 and running is None):
            return nullcontext()
        return PerEpisodeNorm(episodes, running, name)

    @abstractmethod
    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                ) -> Tensor:
        """Args: support_x ``[T, N*K, C, H, W]``, support_y ``[T, N*K]`` in 0..N-1, query_x
        ``[T, M, C, H, W]``. Returns: logits ``[T, M, N]`` (higher = more likely)."""

    def features_per_image(self) -> bool:
        """True when, in eval mode, each image's features depend on that image alone, so
        :meth:`embed` and :meth:`head` can stand in for ``forward``."""
        return False

    def embed(self, x: Tensor) -> Tensor:
        """Features of images ``[B, C, H, W]`` -> ``[B, *F]`` (see :meth:`features_per_image`)."""
        raise NotImplementedError(f"{type(self).__name__} does not embed images one by one")

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        """Logits from features: support ``[T, N*K, *F]``, query ``[T, M, *F]`` -> ``[T, M, N]``."""
        raise NotImplementedError(f"{type(self).__name__} does not embed images one by one")

    def infer(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """``forward`` for evaluation and prediction: without autograd unless ``grad_at_eval``,
        and with the result detached."""
        with torch.set_grad_enabled(self.grad_at_eval):
            return self(support_x, support_y, query_x, n_way).detach()

    def begin_training(self, sampler: Any, steps: int) -> None:
        """Called by the training loop once before its first step (after a resume restored the
        learner's state) with the sampler and the run's total ``steps``: learners that need the
        training data or the schedule's length (clustering, momentum schedules) take it here."""

    def end_step(self) -> None:
        """Called by the training loop after each optimizer step (learners with a schedule of
        their own advance it here: MAML's annealing, momentum encoders)."""

    def train_metrics(self) -> dict[str, float]:
        """Values of the last training batch the loop logs beside loss and accuracy (e.g. the
        embedding spread of self-supervised learners); none by default."""
        return {}

    def batch_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Training loss of one batch drawn by the training loop's sampler and its accuracy
        (scalars; accuracy 0 for float targets): :meth:`loss` of :meth:`batch_logits`, unless a
        learner trained without logits (self-supervised pre-training) overrides it."""
        logits, labels = self.batch_logits(batch)
        loss = self.loss(logits.float(), labels)
        if labels.is_floating_point():  # float targets: regression
            return loss, loss.new_zeros(())
        return loss, (logits.argmax(-1) == labels).float().mean()

    def batch_logits(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Training logits of one batch drawn by the training loop's sampler, and its labels.

        Episode batches (:class:`episodes.Episode`): ``forward`` on the support set and queries,
        logits ``[T, N*Q, N]`` and labels ``query_y`` ``[T, N*Q]``. Learners trained on other
        batches (supervised pre-training on :class:`episodes.LabelledBatch`) override this and
        :meth:`loss`.
        """
        return self(batch.support_x, batch.support_y, batch.query_x, batch.n_way), batch.query_y

    def param_groups(self) -> list[dict[str, Any]]:
        """The training loop's optimizer parameter groups: by default one, of every parameter
        that requires a gradient. A learner whose parts need settings of their own returns
        several, each dict's other keys overriding the optimizer's settings for its parameters
        (``betas`` of Adam: the GAN's DCGAN recipe)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the gradient norm of all parameters together to ``max_norm`` (learners that clip
        per module override this)."""
        torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Training loss of logits ``[T, M, N]`` against labels ``[T, M]``: cross-entropy."""
        return F.cross_entropy(logits.flatten(0, 1), query_y.flatten())


class BackboneLearner(EpisodicLearner):
    """A learner whose logits are a :meth:`head` of the features ``self.backbone`` gives each
    image (ProtoNet, Matching Networks): one backbone pass over the support and queries of all T
    episodes (episode-major, per-episode BatchNorm), then the head. Subclasses set
    ``self.backbone`` and implement :meth:`head`."""

    per_episode_norm = True
    backbone: nn.Module
    rotation_weight: float = 0.0

    def add_rotation_loss(self, head: nn.Module, weight: float) -> None:
        """Rotation prediction as an auxiliary loss of meta-training (Gidaris et al. 2019,
        "Boosting few-shot visual learning with self-supervision"): every training step adds
        ``weight`` times ``head.loss(backbone, images)`` (:class:`fewshot.modules.RotationHead`:
        cross-entropy of the four rotations of every support and query image of the step's
        episodes, their labels unused) to the episodes' loss. The rotated images of each
        episode go through the backbone and the head as the episodes do, with BatchNorm
        statistics of that episode's rotated images (:meth:`episode_norm`), so T batched episodes
        train as T single ones and a step split into chunks as the whole step."""
        self.rotation, self.rotation_weight = head, weight
        self._rotation_acc: Tensor | None = None

    def batch_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        loss, acc = super().batch_loss(batch)
        if self.rotation_weight:
            images = torch.cat([batch.support_x, batch.query_x], 1)  # [T, N*K + M, C, H, W]
            with self.episode_norm(len(images), "rotation"):
                rotation_loss, self._rotation_acc, _ = self.rotation.loss(
                    self.backbone, images.flatten(0, 1), episodes=len(images))
            loss = loss + self.rotation_weight * rotation_loss
        return loss, acc

    def train_metrics(self) -> dict[str, float]:
        acc = getattr(self, "_rotation_acc", None)
        return {} if acc is None else {"rotation_acc": float(acc)}

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int
                ) -> Tensor:
        s, q = embed_episode(self.backbone, support_x, query_x)
        return self.head(s, support_y, q, n_way)

    def features_per_image(self) -> bool:
        return True

    def embed(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    @abstractmethod
    def head(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        """Logits ``[T, M, N]`` from features ``[T, S, *F]``, ``[T, M, *F]``."""


def embed_episode(backbone: nn.Module, support_x: Tensor, query_x: Tensor) -> tuple[Tensor, Tensor]:
    """Run the backbone once over the support and query images of all T episodes.

    Returns: support features ``[T, N*K, *F]`` and query features ``[T, M, *F]``.
    """
    t, s = support_x.shape[:2]
    feats = backbone(torch.cat([support_x, query_x], dim=1).flatten(0, 1))
    feats = feats.view(t, -1, *feats.shape[1:])
    return feats[:, :s], feats[:, s:]
