"""Checkpoints: written atomically, carrying the model spec so any command can rebuild the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from episodes.io import atomic_torch_save

from .learner import EpisodicLearner, ModelSpec, build_learner

FORMAT = "fewshot-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, learner: EpisodicLearner, spec: ModelSpec,
                    **extra: Any) -> None:
    """Write the learner's weights, its spec and ``extra`` (optimizer state, step, ...) atomically."""
    atomic_torch_save({"format": FORMAT, "spec": spec.to_dict(), "model": learner.state_dict(),
                       **extra}, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint, with a clear error for a missing file or a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first (fewshot train) "
                                f"or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise ValueError(f"{path} is not a readable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fewshot checkpoint (written by fewshot train)")
    return ckpt


def restore_model(learner: EpisodicLearner, ckpt: dict[str, Any], spec: ModelSpec | None = None,
                  source: str = "checkpoint") -> None:
    """Load a checkpoint's weights into ``learner``, refusing a checkpoint of another model."""
    if spec is not None and ckpt["spec"] != spec.to_dict():
        raise ValueError(f"{source} is from another model ({ckpt['spec']}) than this run "
                         f"({spec.to_dict()}): use the same method/backbone/options, or a new "
                         f"checkpoint directory")
    try:
        learner.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{source} does not fit this model: {str(e).splitlines()[0]}") from e


def load_learner(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[EpisodicLearner, ModelSpec, dict[str, Any]]:
    """Rebuild a trained learner from a checkpoint. Returns ``(learner, spec, checkpoint)``."""
    ckpt = load_checkpoint(path)
    spec = ModelSpec(**ckpt["spec"])
    learner = build_learner(spec)
    restore_model(learner, ckpt, source=str(path))
    return learner.to(device), spec, ckpt
