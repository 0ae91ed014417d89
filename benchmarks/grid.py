"""One benchmark grid: what the reproduction (``reproduce.py``), transfer (``transfer.py``) and
self-supervised (``self_supervised.py``) benchmarks share, and what a new one builds on.

A benchmark is a grid of *cells*. A cell scores one *model* (one training run, its checkpoints in
``OUT/checkpoints/<model>/``) on the shared fixed test episodes of its setting
(``common.test_episodes``); cells of a setting are compared by paired tests on the same episodes.
Everything accumulates in ``OUT/results.json`` (``{"cells", "models", "paired", "calls"}``, with
``"mode"`` where a benchmark keeps kinds of run apart), written atomically after every step, so a
run stopped by its budget continues where it stopped when the same command runs again.

- results JSON: :func:`empty_results`, :func:`load_results`, :func:`check_mode`,
  :func:`save_results`, :func:`record_call`, :func:`digest`;
- the budget: :class:`Budget`;
- train-or-resume: :func:`train_or_resume` (``fewshot.train`` in chunks, each resuming from
  ``last.pt``), :func:`next_target` (the chunks of a long run);
- time to accuracy: :class:`Curve`, :func:`time_to_accuracy`, :func:`reopened`;
- scoring: :func:`fixed_episodes`, :func:`subset`, :func:`load_model`, :func:`scores`;
- paired tests: :func:`paired`, :func:`pairs_within`.

Rendering and splicing into Markdown between markers: ``grid_render.py``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import common
import torch

from episodes import ClassDataset, FixedEpisodes
from episodes.io import atomic_write_text
from fewshot import TrainConfig, build_learner, load_learner, make_spec, train
from fewshot.engine.evaluate import EvalResult, paired_test
from fewshot.engine.train import TrainResult
from fewshot.models.learner import ModelSpec
from fewshot.registry import fill_from_data

CHUNK_S = 60.0  # chunked training: wall seconds per train() call, between which the budget is checked


# ---------------------------------------------------------------- results JSON
def preset_args(args: Any, presets: dict, out: Path, prefix: str) -> None:
    """The common settings of a preset benchmark's arguments: ``preset_name`` ("quick" with
    ``--quick``), ``preset`` (from ``presets``), ``out_dir`` (default ``out/<prefix>-<preset>``),
    ``results_path``, the torch threads (1 with ``--quick``) and ``device``."""
    args.preset_name = "quick" if args.quick else args.preset
    args.preset = presets[args.preset_name]
    args.out_dir = args.out_dir or out / f"{prefix}-{args.preset_name}"
    args.results_path = args.out_dir / "results.json"
    if args.quick or args.threads:
        torch.set_num_threads(args.threads or 1)
    args.device = torch.device(args.device)


def empty_results(mode: str | None = None) -> dict:
    """The results of a run that has done nothing yet (with ``mode`` if given)."""
    return {**({"mode": mode} if mode is not None else {}), "cells": {}, "models": {}, "paired": {}}


def load_results(path: Path) -> dict | None:
    """The results JSON at ``path``, or None when no run has written it yet."""
    return json.loads(path.read_text()) if path.is_file() else None


def check_mode(results: dict, mode: str, path: Path) -> dict:
    """``results`` if they are of the kind ``mode`` (recorded there when they have none yet);
    exits otherwise: results of two kinds of run are never mixed in one file."""
    if results.setdefault("mode", mode) != mode:
        raise SystemExit(f"{path} holds results of another kind of run ({results['mode']}), "
                         f"this one would be {mode}: give another --out-dir")
    return results


def save_results(results: dict, path: Path) -> None:
    """Write the results JSON atomically (a killed run keeps the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(results, indent=1), path)


def digest(path: Path) -> dict:
    """The mode, models and scored cells of the results JSON at ``path`` without the cells'
    per-episode accuracies (empty when there is none yet)."""
    res = load_results(path)
    if res is None:
        return {}
    cells = {n: {k: v for k, v in c.items() if k != "accuracies"} for n, c in res["cells"].items()}
    return {"mode": res.get("mode"), "models": res["models"], "cells": cells}


def record_call(results: dict, env: dict, wall_seconds: float, **extra: Any) -> None:
    """Add this call (where and when it ran, its wall time, ``extra``) to ``results["calls"]``."""
    results.setdefault("calls", []).append({**env, "wall_seconds": round(wall_seconds, 1),
                                            **extra})


# ---------------------------------------------------------------- the budget
@dataclass
class Budget:
    """A call's deadline (``time.monotonic()`` seconds) and the seconds kept back before it for
    scoring and saving."""

    deadline: float
    reserve: float = 0.0
    start: float = field(default_factory=time.monotonic)

    @classmethod
    def of_minutes(cls, minutes: float | None, reserve: float = 0.0) -> Budget:
        """From now, ``minutes`` (None or 0: no limit)."""
        start = time.monotonic()
        return cls(start + (60 * minutes if minutes else float("inf")), reserve, start)

    def left(self) -> float:
        """Seconds left for work before the reserve."""
        return self.deadline - time.monotonic() - self.reserve

    def wall(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.start


# ---------------------------------------------------------------- train or resume
def pretext_learner(method: str, preset: Any, train_ds: ClassDataset) -> tuple[Any, ModelSpec]:
    """Self-supervised method ``method`` as a benchmark preset builds it (its ``backbone``,
    ``image_size`` and ``ssl_options``, 3 channels), the options the data fills (DeepCluster's and
    UIC's ``num_images``) filled from ``train_ds`` as the command line does: (learner, spec)."""
    options = fill_from_data(method, dict(preset.ssl_options.get(method, {})),
                             images=len(train_ds), classes=train_ds.num_classes)
    spec = make_spec(method, preset.backbone, 3, preset.image_size, options)
    return build_learner(spec), spec


def checkpoints(out_dir: Path, key: str) -> Path:
    """The folder of model ``key``'s checkpoints: ``out_dir/checkpoints/<key>``."""
    return out_dir / "checkpoints" / key


def next_target(s: dict, done: int, best_step: int, left: float, per_step: float | None,
                chunk_s: float = CHUNK_S) -> int:
    """The step the next train() call of a chunked run stops at: ``s["chunk"]`` steps more if
    set, else about ``chunk_s`` of wall time (or what is left, if less) at the ``per_step``
    seconds of the last call (one validation interval for the first call), in whole validation
    intervals (``s["val_every"]``) so that validation keeps its schedule, and never past the
    early-stopping point ``best_step + s["patience"]`` or ``s["steps"]``. The wall time includes
    validation and checkpoints, which train()'s own time_limit does not count."""
    if s["chunk"]:
        return min(s["steps"], done + s["chunk"])
    unit = s["val_every"] or 1
    units = 1 if per_step is None else max(1, int(min(chunk_s, left) / per_step / unit))
    target = min(s["steps"], (done // unit + units) * unit)
    return min(target, best_step + s["patience"]) if s["patience"] else target


Plan = Callable[[int, float, float | None], int]  # (steps done, seconds left, s/step) -> target


def train_or_resume(rec: dict, key: str, learner: Any, spec: Any, sampler: Any,
                    config: TrainConfig, budget: Budget, env: dict, *,
                    device: torch.device | str, val: tuple | None = None,
                    plan: Plan | None = None,
                    after_chunk: Callable[[TrainResult], None] | None = None,
                    save: Callable[[], None] = lambda: None,
                    train_fn: Callable[..., TrainResult] = train,
                    chunk_seconds: float | None = None) -> bool:
    """Train (or continue, from ``config.checkpoint_dir``'s ``last.pt``) one model towards
    ``config.steps`` within ``budget``; True once it is finished.

    One train() call, or with ``plan`` several, each to the step ``plan`` gives, until the model
    is done, stops progressing or the budget runs out. After each call ``rec`` (the model's
    record in ``results["models"]``) holds ``steps``, ``target_steps``, ``seconds`` (training
    seconds, train()'s clock, summed over calls) and ``status`` ("done" or "training"), then
    ``after_chunk`` may add to it (or finish the model), and ``save`` writes it. With
    ``chunk_seconds``, a call also stops after that many seconds of training (a time-to-accuracy
    curve point is due then, whatever the validation interval). Each call of this
    function adds a session (date, device, steps from and to, seconds, train() calls) to
    ``rec["sessions"]``."""
    session = {"date": env["date"], "device": env["device"], "steps_from": rec.get("steps", 0)}
    rec.setdefault("sessions", []).append(session)
    per_step = None
    while (left := budget.left()) > 0:
        tick = time.monotonic()
        target = plan(rec.get("steps", 0), left, per_step) if plan else config.steps
        limit = rec.get("seconds", 0.0) + min(left, chunk_seconds or left)
        cfg = replace(config, steps=target, resume=True, progress=False, time_limit=limit)
        res = train_fn(learner, spec, sampler, cfg, val=val, device=device)
        progressed = res.steps > rec.get("steps", 0)
        per_step = (time.monotonic() - tick) / max(1, res.steps - rec.get("steps", 0))
        rec.update(steps=res.steps, target_steps=config.steps, seconds=round(res.seconds, 1),
                   status="done" if res.steps >= config.steps else "training")
        session.update(steps_to=res.steps, seconds=round(res.seconds, 1),
                       train_calls=session.get("train_calls", 0) + 1)
        if after_chunk:
            after_chunk(res)
        print(f"  {key}: {res.steps}/{config.steps} steps, {res.seconds:.0f} s of training "
              f"({rec['status']})", flush=True)
        save()
        if rec["status"] == "done" or not progressed or plan is None:
            break
    rec.setdefault("status", "training")
    return rec["status"] == "done"


# ---------------------------------------------------------------- time to accuracy
@dataclass(frozen=True)
class Curve:
    """Time to accuracy: a curve point every ``every`` minutes of training, each on the first
    ``episodes`` shared test episodes; a model finished after ``cap`` minutes of training, or with
    ``until_published`` once a point reached the published accuracy of every cell it serves.
    Minutes are training minutes (``train()``'s clock: no validation, scoring or checkpoints)."""

    every: float | None = None
    episodes: int = 200
    cap: float | None = None
    until_published: bool = False


def capped_below(model: dict, curve: Curve) -> bool:
    """Whether the model stopped at a time cap below ``curve.cap`` (a larger cap continues it)."""
    return bool(model.get("stopped", "").startswith("time cap") and curve.cap
                and model["seconds"] / 60 < curve.cap)


def reopened(rec: dict, curve: Curve) -> bool:
    """True (and the model back in training) if it stopped at a time cap below ``curve.cap``."""
    if capped_below(rec, curve):
        rec["status"] = "training"
        return True
    return False


def time_to_accuracy(rec: dict, key: str, curve: Curve, published: dict[str, float],
                     score_first: Callable[[int], dict[str, float]]) -> None:
    """After a train() call of the model ``rec``: with ``curve.every``, when that many training
    minutes passed since the last point (or the model is finished or capped), add a point to
    ``rec["curve"]``: the accuracy (a fraction) in each setting the model serves of
    ``score_first(curve.episodes)``. Finishes the model at ``curve.cap`` minutes (``stopped``:
    "time cap: ..."), or with ``curve.until_published`` once a point reached ``published``
    (setting -> %) everywhere (``stopped``: "published accuracy reached ...", and
    ``reached_published``: the training minutes)."""
    if not curve.every and not curve.cap:
        return
    points, minutes = rec.setdefault("curve", []), rec["seconds"] / 60
    finished = rec["status"] == "done"
    capped = bool(curve.cap) and minutes >= curve.cap
    due = (not points or minutes - points[-1]["train_minutes"] >= curve.every
           if curve.every else False)
    if curve.every and (due or finished or capped) and (
            not points or points[-1]["steps"] != rec["steps"]):
        acc = score_first(curve.episodes)
        points.append({"train_minutes": round(minutes, 2), "steps": rec["steps"],
                       "accuracy": acc, "episodes": curve.episodes})
        print(f"  {key}: {minutes:.1f} min, "
              + ", ".join(f"{k} {100 * v:.2f} %" for k, v in acc.items()), flush=True)
        if curve.until_published and all(100 * acc[s] >= pub for s, pub in published.items()):
            rec.update(status="done", stopped=f"published accuracy reached after {minutes:.0f} "
                       f"min of training ({rec['steps']:,} steps)", reached_published=minutes)
            return
    if capped and not finished:
        rec.update(status="done", stopped=f"time cap: {curve.cap:g} min of training "
                   f"({rec['steps']:,} steps)")


# ---------------------------------------------------------------- scoring
def subset(episodes: FixedEpisodes, start: int, stop: int) -> FixedEpisodes:
    """Episodes ``start`` to ``stop`` of a fixed episode set."""
    return FixedEpisodes(episodes.classes[start:stop], episodes.items[start:stop],
                         episodes.k_shot, episodes.fingerprint)


def fixed_episodes(dataset: ClassDataset, way: int, shot: int, query: int, total: int,
                   name: str, count: int | None = None) -> FixedEpisodes:
    """The setting's shared fixed test episodes (a set of ``total``, ``common.test_episodes``),
    or the first ``count`` of them."""
    episodes = common.test_episodes(dataset, way, shot, query, total, name)
    return subset(episodes, 0, count) if count is not None and count < len(episodes) else episodes


def load_model(out_dir: Path, key: str, device: torch.device | str, best: bool = False) -> Any:
    """Model ``key``'s learner from its ``best.pt`` (with ``best``, where there is one), else
    its ``last.pt``."""
    ckdir = checkpoints(out_dir, key)
    path = ckdir / ("best.pt" if best and (ckdir / "best.pt").is_file() else "last.pt")
    learner, _, _ = load_learner(path, device)
    return learner


def scores(r: EvalResult) -> dict:
    """A cell's scores: mean accuracy, its 95% interval, episodes and per-episode accuracies
    (which the paired tests use)."""
    return {"mean": r.mean, "ci95": r.ci95, "episodes": len(r.accuracies),
            "accuracies": r.accuracies.tolist()}


# ---------------------------------------------------------------- paired tests
def paired(a: dict, b: dict, common_prefix: bool = False) -> dict:
    """The paired test of cell ``a`` minus cell ``b`` on their per-episode accuracies (the same
    episodes); with ``common_prefix``, on the first episodes both have (their count added as
    ``"episodes"``)."""
    n = min(len(a["accuracies"]), len(b["accuracies"])) if common_prefix else None
    ra, rb = (EvalResult(torch.tensor(c["accuracies"][:n]), 0, 0, 0) for c in (a, b))
    return {**paired_test(ra, rb), **({"episodes": n} if common_prefix else {})}


def pairs_within(cells: dict[str, dict]) -> dict[str, dict]:
    """Paired tests between every two of ``cells`` (name -> cell, one setting) scored on the
    same number of episodes, keyed ``"a - b"`` in name order."""
    return {f"{a} - {b}": paired(ca, cb)
            for (a, ca), (b, cb) in itertools.combinations(sorted(cells.items()), 2)
            if ca["episodes"] == cb["episodes"]}
