"""The one meta-training loop, for every learner.

Each step draws a batch of T episodes (already on the device), computes the learner's loss over all
of them and takes one optimizer step. The same loop pre-trains a classifier on ordinary
mini-batches (:class:`episodes.ImageBatchSampler`) and self-supervised learners on augmented
views: the learner turns whatever batch the sampler draws into a loss
(:meth:`EpisodicLearner.batch_loss`, by default of :meth:`~EpisodicLearner.batch_logits`).
Validation on fixed episodes keeps the best checkpoint; ``last.pt`` is written atomically every
``checkpoint_every`` steps and holds everything needed to resume (weights, optimizer, schedule,
sampler and RNG states), so a resumed run finishes exactly as an uninterrupted one would.

Under ``torchrun`` (:mod:`fewshot.engine.distributed`) the same loop runs on every rank: each step's
batch is split across the ranks, the gradients are those of the whole batch, validation episodes
are split too, and only rank 0 writes checkpoints and logs (learners that train in one process
only, self-supervised ones, are refused). ``last.pt`` then also holds each rank's sampler and
RNG state, so a run resumed on as many ranks continues exactly; resumed on a
different number, it continues from the weights, optimizer, schedule and step with the same
episodes (every rank draws the indices of the whole batch) but new augmentation and RNG streams on
ranks > 0, so it is not bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from episodes import ClassDataset, Episode, EpisodeSampler, FixedEpisodes, SineTasks

from ..models.episode_norm import deferred_running_stats
from ..models.learner import EpisodicLearner, ModelSpec
from . import distributed
from .checkpoint import (
    all_finite,
    load_checkpoint,
    non_finite_names,
    restore_model,
    save_checkpoint,
)
from .evaluate import evaluate
from .logs import RunningMeans, TrainLog
from .memory import chunks
from .precision import (
    autocast,
    check_resumed_precision,
    resolve_precision,
    to_channels_last,
    use_channels_last,
)
from .step_size import step_chunk
from .streams import restore_streams, rng_state, shard_sampler
from .train_config import TrainConfig, TrainResult, make_optimizer

__all__ = ["Diverged", "TrainConfig", "TrainResult", "accumulate", "make_optimizer", "train"]


class Diverged(ValueError):
    """Training produced a non-finite loss or non-finite weights; nothing non-finite was
    written (the message names the step, the value and the last good checkpoint)."""


EXPLODED = 100.0  # a running loss this many times its first value (at least 1) is warned about


def train(learner: EpisodicLearner, spec: ModelSpec | None, sampler: EpisodeSampler | SineTasks | Any,
          config: TrainConfig, val: tuple[ClassDataset, FixedEpisodes] | None = None,
          device: torch.device | str | None = None,
          monitors: Sequence[Callable[[EpisodicLearner], dict[str, float]]] = ()) -> TrainResult:
    """Meta-train ``learner`` on episodes from ``sampler`` (or pre-train it on the labelled
    mini-batches of an :class:`episodes.ImageBatchSampler`).

    Args:
        spec: the learner's spec (saved in checkpoints, checked on resume); None for a learner
            built by hand rather than from a spec, which then cannot write checkpoints.
        sampler: an :class:`~episodes.EpisodeSampler`, :class:`~episodes.SineTasks`
            (regression: float targets, no accuracy is logged, no image pipeline is recorded), or
            anything with ``sample()``, ``state_dict()``/``load_state_dict()``, ``dataset`` and
            ``episodes_per_batch`` whose batches ``learner.batch_loss`` takes.
        val: a validation dataset and fixed episodes drawn from it.
        device: where the learner trains (default: the device of the sampler's dataset, or of
            ``SineTasks``). Episodes are moved there if the sampler produces them elsewhere.
        monitors: functions of the learner returning named values (e.g. the k-NN accuracy of
            :func:`fewshot.ssl.monitor.knn_monitor`), run and logged at every validation.
    """
    dataset = getattr(sampler, "dataset", None)  # None: SineTasks
    if device is None:
        device = dataset.device if dataset is not None else sampler.device
    device = torch.device(device)
    learner.to(device)
    precision = resolve_precision(config.precision, device, spec.method if spec else None)
    if use_channels_last(learner, device, config.channels_last):
        to_channels_last(learner)
    ctx = distributed.current()
    distributed.refuse_several_processes(learner)
    shard_sampler(sampler, ctx)
    optimizer, scheduler = make_optimizer(learner.param_groups(), config)
    ckdir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    if ckdir is not None and spec is None:
        raise ValueError("checkpoints need the learner's ModelSpec: build the learner with "
                         "build_learner(spec) and pass spec, or set checkpoint_dir=None")
    step, seconds, best, history, pending = 0, 0.0, None, [], None
    if config.resume and ckdir is not None and (ckdir / "last.pt").is_file():
        ckpt = load_checkpoint(ckdir / "last.pt", map_location=device)
        check_resumed_precision(ckpt, precision, ckdir / "last.pt")
        restore_model(learner, ckpt, spec, source=str(ckdir / "last.pt"))
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        restore_streams(sampler, ckpt, ctx)
        step, seconds, best, history = ckpt["step"], ckpt["seconds"], ckpt["best"], ckpt["history"]
        pending = ckpt.get("log")  # the sums of steps not yet recorded

    saved_step = step if config.resume and ckdir is not None and (ckdir / "last.pt").is_file() \
        else None

    def diverged(what: str) -> Diverged:
        last = (f"the last good checkpoint is {ckdir / 'last.pt'} (step {saved_step})"
                if saved_step is not None else "no checkpoint of this run was written")
        return Diverged(f"training diverged at step {step}: {what}; {last}: lower --lr (now "
                        f"{config.lr:g}) or check the data and options, then resume or start again")

    def not_finite() -> str:
        return "the weights are not finite (" + ", ".join(non_finite_names(learner)) + ")"

    def checkpoint(name: str) -> None:
        nonlocal saved_step
        if ckdir is None:
            return
        if not all_finite(learner):  # never written: a NaN best.pt would pass for a model
            raise diverged(not_finite())
        if name == "last.pt":
            saved_step = step
        unrecorded = means.state(ctx)
        ranks = (distributed.gather_objects({"sampler": sampler.state_dict(), "rng": rng_state()})
                 if ctx.active else None)
        if ctx.main:
            save_checkpoint(ckdir / name, learner, spec, optimizer=optimizer.state_dict(),
                            pipeline=dataset.pipeline if dataset is not None else None,
                            scheduler=scheduler.state_dict() if scheduler else None,
                            sampler=sampler.state_dict(), rng=rng_state(), step=step,
                            seconds=seconds, best=best, history=history, log=unrecorded,
                            config={**asdict(config), "resolved_precision": precision},
                            **({"ranks": ranks} if ranks else {}))

    def validate() -> None:
        nonlocal best
        if not all_finite(learner):
            raise diverged(not_finite())
        log.doing("validating")
        acc = evaluate(learner, val[1], val[0], device=device, precision=precision,
                       max_memory=config.max_memory).mean
        log.doing("training")
        extra = {k: v for m in monitors for k, v in m(learner).items()}
        learner.train()
        log.record({"step": step, "val_acc": acc, **extra, "seconds": seconds})
        if best is None or acc > best:
            best = acc
            checkpoint("best.pt")

    learner.begin_training(sampler, config.steps)
    learner.train()
    part = getattr(sampler, "part", slice(0, sampler.episodes_per_batch))
    local = part.stop - part.start  # this rank's episodes (images) of each step
    sync = distributed.GradientSync(learner, ctx, local / sampler.episodes_per_batch, device)
    parts = chunks(local, step_chunk(learner, sampler, config.episodes_per_forward,
                                     config.max_memory, device, local))
    if len(parts) > 1 and learner.step_statistics:
        raise ValueError(f"this learner normalises a step's {local} episodes together (option "
                         f"step_norm), so they cannot be split into forwards of "
                         f"{parts[0].stop} episodes: set --episodes-per-forward {local} and a "
                         f"larger --max-memory, or fewer --episodes-per-step")
    log = TrainLog(None if config.time_limit else config.steps, step, history,
                   ckdir if ctx.main else None, enabled=config.progress and ctx.main,
                   tensorboard=config.tensorboard and ctx.main)
    means = RunningMeans(device, config.log_every, pending, ctx.main)
    first_loss, warned = None, False

    def report(batch: Any) -> None:
        nonlocal first_loss, warned
        run_loss, run_acc, n = means.take(ctx)
        if not math.isfinite(run_loss):
            raise diverged(f"the loss is {run_loss} (over steps {step - n + 1}-{step})")
        first_loss = run_loss if first_loss is None else first_loss
        if not warned and run_loss > EXPLODED * max(first_loss, 1.0):
            warned = True
            warnings.warn(f"the loss reached {run_loss:.3g} at step {step}, from {first_loss:.3g}"
                          f": the learning rate (--lr {config.lr:g}) may be too high", stacklevel=3)
        classify = not getattr(batch, "query_y", means.sums).is_floating_point()
        log.record({"step": step, "loss": run_loss, **({"acc": run_acc} if classify else {}),
                    **learner.train_metrics(), "seconds": seconds})

    start_step, tick = step, time.perf_counter()
    while step < config.steps:
        if config.time_limit is not None and (distributed.any_rank(seconds >= config.time_limit)
                                              if ctx.active else seconds >= config.time_limit):
            break
        batch = sampler.sample().to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        means.add(accumulate(learner, batch, parts, precision, sync))
        sync.finish()
        clip = config.grad_clip if config.grad_clip is not None else learner.grad_clip
        if clip is not None:
            learner.clip_gradients(clip)
        optimizer.step()
        learner.end_step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        now = time.perf_counter()
        seconds, tick = seconds + now - tick, now
        if means.due(step, step == config.steps):
            report(batch)
        log.update()
        if val is not None and config.val_every and step % config.val_every == 0:
            validate()
            tick = time.perf_counter()
        if step % config.checkpoint_every == 0:
            checkpoint("last.pt")
            tick = time.perf_counter()
    if means.count:  # stopped by the time limit between two records
        report(batch)
    log.close()
    if device.type == "cuda":  # count the work still queued on the device
        torch.cuda.synchronize(device)
        seconds += time.perf_counter() - tick
    if val is not None and (not config.val_every or step % config.val_every) and step > start_step:
        validate()
    checkpoint("last.pt")
    return TrainResult(step, seconds, step * sampler.episodes_per_batch, best, history)


def accumulate(learner: EpisodicLearner, batch: Episode | Any, parts: list[slice],
               precision: str = "fp32", sync: distributed.GradientSync | None = None) -> Tensor:
    """Forward and backward of ``batch`` (T episodes, or any batch ``learner.batch_loss``
    takes), an episode batch split into the chunks ``parts``, each chunk's loss weighted by its
    share of the T episodes, so the summed gradients are the whole batch's. Returns ``[loss,
    accuracy]`` of the batch (on the device, not synchronised; accuracy 0 for float targets).

    ``sync``: in a distributed run, the forward to call and this rank's weights
    (:class:`fewshot.engine.distributed.GradientSync`): the loss is weighted by ``sync.loss_weight``
    and the result by ``sync.share``, so its sum over the ranks is the whole step's."""
    device = next(learner.parameters()).device
    total = torch.zeros(2, device=device)
    if len(parts) > 1:
        t = len(batch)
        pieces = [(batch.slice(part), (part.stop - part.start) / t) for part in parts]
    else:
        pieces = [(batch, 1.0)]
    weight, report = (sync.loss_weight, sync.share) if sync is not None else (1.0, 1.0)
    forward = sync.forward if sync is not None else learner.batch_loss
    defer = len(parts) > 1 and learner.per_episode_norm
    with deferred_running_stats(learner, len(parts)) if defer else nullcontext():
        for i, (piece, share) in enumerate(pieces):
            with sync.chunk(last=i == len(pieces) - 1) if sync is not None else nullcontext():
                with autocast(device, precision):
                    loss, acc = forward(piece)
                    loss = loss * share
                (loss * weight if weight != 1.0 else loss).backward()
            total += report * torch.stack([loss.detach().float(), share * acc.detach().float()])
    return total
