"""Fine-tuning the backbone on each episode's support set: all layers, named layers, two-stage.

Every episode gets its own copy of the parameters it tunes, stacked ``[T, ...]``; the stored
backbone is never written (its parameters are read through ``torch.func.functional_call``, the
tuned ones replaced by the episode's copies), and parameters that are not tuned are shared by
all episodes, unbatched. The T episodes run as one computation: ``torch.func.vmap`` over the
episodes' copies and images, one optimizer over the stacked copies (elementwise updates of a sum
of independent losses: exactly T separate fine-tunings), ``episodes_per_chunk`` episodes at a
time to bound memory. BatchNorm uses the backbone's running statistics throughout (eval mode), so
a query's prediction does not depend on the other queries and the statistics are never updated.

- ``finetune``: a new linear head (``head_init``) and the layers ``layers`` trained together,
  ``steps`` full-batch steps over the support set at ``lr``.
- ``two-stage`` (the seed material's recipe; Kumar et al. 2022's linear probing then
  fine-tuning): first the new head alone on the frozen backbone (``head_steps`` at ``head_lr``),
  then the head and the layers ``layers`` together at the lower ``lr`` (``steps``).

Chen et al. 2019 fine-tune only the head (the ``linear`` head); these follow the usual transfer
learning recipes, with settings of this library's choosing (options).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from episodes.options import check

from ..engine.features import extract_features
from ..functional import prototypes
from ..models.zoo import select_parameters, split_patterns
from .functional import StepHook, episode_loss, episode_optimizer, fit, linear_logits, uniform_init


@dataclass
class FinetuneHead:
    """Options of ``--head finetune``.

    Attributes:
        layers: backbone layers tuned with the head: ``all``, or comma-separated layer names or
            patterns (``blocks.3``: ResNet-12's last block; ``layer4,fc``; ``*.bn*``).
        steps, lr: full-batch optimizer steps over the support set and their learning rate.
        optimizer: ``sgd`` (with ``momentum``) or ``adam``; weight_decay: both.
        head_init: the new head's start: ``random`` (as ``nn.Linear``), ``zero``, or
            ``prototype`` (``W = 2 c_n``, ``b = -|c_n|^2``: ProtoNet's classifier as a linear layer).
        episodes_per_chunk: episodes fine-tuned together (memory).
        vmap: run the episodes' copies through ``torch.func.vmap`` (true) or one after another
            (false); none: vmap on a GPU, one after another on the CPU, where it measured
            faster (as MAML's ``vmap`` option).
        seed: seed of the random head initialisation.
    """

    layers: str = "all"
    steps: int = 100
    lr: float = 0.01
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.001
    head_init: Literal["random", "zero", "prototype"] = "random"
    episodes_per_chunk: int = 4
    vmap: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "episodes_per_chunk"):
            check(getattr(self, name) >= (1 if name == "episodes_per_chunk" else 0), name,
                  ">= 1" if name == "episodes_per_chunk" else ">= 0", getattr(self, name))
        check(self.lr > 0, "lr", "> 0", self.lr)
        check(bool(split_patterns(self.layers)), "layers", "'all' or layer names", self.layers)


@dataclass
class TwoStageHead(FinetuneHead):
    """Options of ``--head two-stage``: those of ``finetune`` (``steps``, ``lr``: the second
    stage, at a lower learning rate) and the first stage's ``head_steps`` and ``head_lr``."""

    steps: int = 50
    lr: float = 0.001
    head_steps: int = 100
    head_lr: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.head_steps >= 0, "head_steps", ">= 0", self.head_steps)
        check(self.head_lr > 0, "head_lr", "> 0", self.head_lr)


@dataclass(frozen=True)
class Stage:
    """One stage: its name, the backbone parameters it tunes (besides the head), steps, lr."""

    name: str
    tuned: tuple[str, ...]
    steps: int
    lr: float


def stages(backbone: nn.Module, config: FinetuneHead) -> list[Stage]:
    """The stages of ``config``, in the order they run."""
    tuned = tuple(select_parameters(backbone, split_patterns(config.layers), "option layers"))
    if isinstance(config, TwoStageHead):
        return [Stage("head", (), config.head_steps, config.head_lr),
                Stage("backbone", tuned, config.steps, config.lr)]
    return [Stage("finetune", tuned, config.steps, config.lr)]


def finetune_logits(backbone: nn.Module, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                    n_way: int, config: FinetuneHead, chunk_size: int | None = None,
                    on_step: StepHook | None = None) -> Tensor:
    """Query logits ``[T, M, N]`` after fine-tuning on each episode's support set.

    support_x ``[T, N*K, C, H, W]``, support_y ``[T, N*K]``, query_x ``[T, M, C, H, W]``.
    ``on_step(stage, step, optimizer)`` is called after every optimizer step.
    """
    plan = stages(backbone, config)
    generator = torch.Generator().manual_seed(config.seed)
    was_training = backbone.training
    backbone.eval()
    try:
        return torch.cat([
            _finetune(backbone, support_x[i:i + config.episodes_per_chunk],
                      support_y[i:i + config.episodes_per_chunk],
                      query_x[i:i + config.episodes_per_chunk], n_way, config, plan, generator,
                      chunk_size, on_step)
            for i in range(0, support_x.shape[0], config.episodes_per_chunk)])
    finally:
        backbone.train(was_training)


# Images per backbone forward while fine-tuning (``chunk_size`` overrides it). It caps one
# forward's working memory only: a step's backward keeps the activations of every support image
# of the ``episodes_per_chunk`` episodes fine-tuned together, so that option bounds a step's memory.
FINETUNE_CHUNK = 256


def _finetune(backbone: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, n_way: int,
              config: FinetuneHead, plan: list[Stage], generator: torch.Generator,
              chunk_size: int | None, on_step: StepHook | None) -> Tensor:
    t = sx.shape[0]
    chunk_size = chunk_size or FINETUNE_CHUNK
    base = {**{n: p.detach() for n, p in backbone.named_parameters()},
            **dict(backbone.named_buffers())}
    names = sorted({n for stage in plan for n in stage.tuned})
    tuned = {n: base[n].unsqueeze(0).repeat(t, *[1] * base[n].dim()) for n in names}
    shared = {n: v for n, v in base.items() if n not in tuned}

    def embed_one(params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(backbone, {**shared, **params}, (x,)).flatten(1)

    def embed_shared(x: Tensor) -> Tensor:  # [t, B, C, H, W] -> [t, B, D], the stored weights
        return extract_features(backbone, x.flatten(0, 1), chunk_size).view(t, x.shape[1], -1)

    def embed(x: Tensor) -> Tensor:  # [t, B, C, H, W] -> [t, B, D], each episode's own copy
        per_episode = max(1, chunk_size // t)  # images of each episode per forward pass
        if use_vmap:
            return torch.cat([vmap(embed_one)(tuned, x[:, i:i + per_episode])
                              for i in range(0, x.shape[1], per_episode)], 1)
        return torch.stack([torch.cat([embed_one({n: p[e] for n, p in tuned.items()},
                                                 x[e, i:i + per_episode])
                                       for i in range(0, x.shape[1], per_episode)])
                            for e in range(t)])

    def loss_given(fixed: Tensor | None):  # the features of a stage that tunes no layer are fixed
        def loss_of(_: Tensor | None) -> Tensor:
            return episode_loss(linear_logits(embed(sx) if fixed is None else fixed, weight, bias),
                                sy)
        return loss_of

    use_vmap = config.vmap if config.vmap is not None else sx.device.type == "cuda"
    with torch.no_grad():
        start = embed_shared(sx)
    weight, bias = _init_head(config.head_init, start, sy, n_way, generator)
    changed = False  # whether the episodes' copies differ from the stored weights yet
    for stage in plan:
        for n, p in tuned.items():
            p.requires_grad_(n in stage.tuned)
        params = [weight, bias, *(tuned[n] for n in stage.tuned)]
        opt = episode_optimizer(params, config.optimizer, stage.lr, config.momentum,
                                config.weight_decay)
        with torch.no_grad():
            fixed = None if stage.tuned else (embed(sx) if changed else start)
        with torch.enable_grad():
            fit(opt, loss_given(fixed), iter([None] * stage.steps), stage.name, on_step)
        changed = changed or bool(stage.tuned and stage.steps)
    with torch.no_grad():
        return linear_logits(embed(qx) if changed else embed_shared(qx), weight, bias)


def _init_head(kind: str, feats: Tensor, labels: Tensor, n_way: int,
               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A new head ``[t, N, D]``, ``[t, N]`` for support features ``feats`` ``[t, S, D]``."""
    t, _, d = feats.shape
    if kind == "prototype":
        protos = prototypes(feats, labels, n_way)
        weight, bias = 2 * protos, -protos.pow(2).sum(-1)
    elif kind == "zero":
        weight, bias = feats.new_zeros(t, n_way, d), feats.new_zeros(t, n_way)
    else:
        weight = uniform_init((t, n_way, d), d, generator, feats)
        bias = uniform_init((t, n_way), d, generator, feats)
    return weight.requires_grad_(), bias.requires_grad_()
