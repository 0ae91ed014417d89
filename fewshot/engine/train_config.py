"""The settings of the one training loop (:class:`TrainConfig`), what a run did
(:class:`TrainResult`), and the optimizer and learning-rate schedule a configuration makes
(:func:`make_optimizer`), for :func:`fewshot.engine.train.train`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .logs import LOG_EVERY


@dataclass
class TrainConfig:
    """Settings of :func:`fewshot.engine.train.train`.

    Attributes:
        steps: optimizer steps (each on ``sampler.episodes_per_batch`` episodes).
        lr, weight_decay: optimizer settings; optimizer: "adam" or "sgd" (with ``momentum``).
        schedule: "step": multiply the learning rate by ``lr_decay`` every ``lr_decay_every``
            steps (0: never); "cosine": anneal it to 0 over ``steps`` (a run resumed with more
            ``steps`` anneals over the new number from where it is).
        val_every: validate every that many steps (0: only at the end, if val episodes are given).
        checkpoint_dir: where ``last.pt`` and ``best.pt`` go (None: no checkpoints).
        checkpoint_every: write ``last.pt`` every that many steps.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        precision: "fp32", "bf16" (bfloat16 autocast) or "auto" (bf16 on a CPU with bfloat16
            units for the methods checked in it, else fp32: :mod:`fewshot.engine.precision`); a
            resumed run must have its checkpoint's precision.
        channels_last: channels-last weights (None: on a CPU where it pays,
            :func:`fewshot.engine.precision.use_channels_last`).
        time_limit: stop after this many seconds of training.
        grad_clip: clip the gradient norm to this (None: the learner's own ``grad_clip``, which
            is None, no clipping, for most learners).
        progress: report running loss and accuracy (a bar on a terminal, plain lines
            otherwise; :class:`fewshot.engine.logs.TrainLog`); the run files are written regardless.
        log_every: every that many steps, record the mean loss and accuracy of the steps since
            the last record (the last step is always recorded; :mod:`fewshot.engine.logs`).
        tensorboard: also write TensorBoard event files (needs the ``tensorboard`` package).
        max_memory: bytes a training forward and backward may take (None: a share of the
            device's free memory, :func:`fewshot.engine.memory.memory_budget`); validation too.
        episodes_per_forward: split each step's T episodes into forwards of this many and
            accumulate their gradients (None: all T if they fit ``max_memory``, else the most
            that fit). The result does not depend on it (:mod:`fewshot.models.episode_norm`).
        run: the run's configuration (``run.json``), stored in every checkpoint so that a run
            folder that lost its ``run.json`` is still checked when resumed.
    """

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_every: int = 0
    lr_decay: float = 0.5
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    schedule: Literal["step", "cosine"] = "step"
    val_every: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    resume: bool = False
    precision: str = "auto"
    channels_last: bool | None = None
    time_limit: float | None = None
    grad_clip: float | None = None
    progress: bool = True
    log_every: int = LOG_EVERY
    tensorboard: bool = False
    max_memory: int | None = None
    episodes_per_forward: int | None = None
    run: dict | None = None


@dataclass
class TrainResult:
    """What a run did: steps taken, seconds of training, history of logged values."""

    steps: int
    seconds: float
    episodes: int
    best_val: float | None
    history: list[dict] = field(default_factory=list)

    @property
    def episodes_per_second(self) -> float:
        return self.episodes / self.seconds if self.seconds > 0 else float("nan")


def make_optimizer(params: Any, config: TrainConfig
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer and learning-rate schedule of ``config`` over ``params``."""
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "cosine":  # closed form of the step count, so resuming is exact
        return optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, config.steps)
                                                        / config.steps)))
    return optimizer, (torch.optim.lr_scheduler.StepLR(optimizer, config.lr_decay_every,
                                                       config.lr_decay)
                       if config.lr_decay_every > 0 else None)
