"""Checkpoints: written atomically, carrying the model spec so any command can rebuild the model."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from episodes.io import atomic_torch_save

from .learner import EpisodicLearner, ModelSpec
from .registry import build_learner, canonical

FORMAT = "fewshot-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, learner: EpisodicLearner, spec: ModelSpec,
                    **extra: Any) -> None:
    """Write the learner's weights, its spec and ``extra`` (optimizer state, step, ...) atomically.

    Everything is stored as tensors and plain containers (paths become strings), so that the file
    loads with ``torch.load(weights_only=True)``.
    """
    atomic_torch_save({"format": FORMAT, "spec": spec.to_dict(), "model": learner.state_dict(),
                       **plain(extra)}, path)


def plain(obj: Any) -> Any:
    """``obj`` with every path turned into a string, in nested dicts, lists and tuples."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return type(obj)((k, plain(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v) for v in obj)
    return obj


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint, with a clear error for a missing file or a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first (fewshot train) "
                                f"or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's text suggests unsafe loading: not repeated
        why = ("it holds objects other than tensors and plain containers, which fewshot never "
               "writes, so it was not loaded and nothing in it ran" if "GLOBAL" in str(e)
               else "it is not a PyTorch file")
        raise ValueError(f"{path} is not a readable checkpoint: {why}: use a checkpoint written "
                         f"by fewshot train") from e
    except Exception as e:  # noqa: BLE001 - any other read failure means the same thing here
        raise ValueError(f"{path} is not a readable checkpoint ({_first_line(e)}): use a "
                         f"checkpoint written by fewshot train") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fewshot checkpoint (written by fewshot train)")
    return ckpt


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def restore_model(learner: EpisodicLearner, ckpt: dict[str, Any], spec: ModelSpec | None = None,
                  source: str = "checkpoint") -> None:
    """Load a checkpoint's weights into ``learner``, refusing a checkpoint of another model."""
    if spec is not None:
        saved, wanted = canonical(ckpt["spec"]).to_dict(), canonical(spec).to_dict()
        if saved != wanted:
            changed = ", ".join(f"{k}: {saved[k]!r} -> {wanted[k]!r}" for k in saved
                                if saved[k] != wanted[k])
            raise ValueError(f"{source} is from another model than this run ({changed}): use the "
                             f"same method/backbone/options, or a new checkpoint directory")
    try:
        learner.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{source} does not fit this model: {str(e).splitlines()[0]}") from e


def load_learner(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[EpisodicLearner, ModelSpec, dict[str, Any]]:
    """Rebuild a trained learner from a checkpoint. Returns ``(learner, spec, checkpoint)``."""
    ckpt = load_checkpoint(path)
    spec = canonical(ckpt["spec"])
    learner = build_learner(spec)
    restore_model(learner, ckpt, source=str(path))
    return learner.to(device), spec, ckpt
