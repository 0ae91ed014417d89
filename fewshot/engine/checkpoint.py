"""Checkpoints: written atomically, carrying the model spec so any command can rebuild the model,
and the image pipeline (:class:`episodes.ImagePipeline`) its training data was read with, so every
command reads files the same way."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from episodes import ClassDataset, ImagePipeline
from episodes.io import atomic_torch_save

from ..models.learner import EpisodicLearner, ModelSpec
from ..registry import build_learner, canonical, stored_spec

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
    """``obj`` with every path turned into a string and every :class:`ImagePipeline` into a dict,
    in nested dicts, lists and tuples."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, ImagePipeline):
        return obj.to_dict()
    if isinstance(obj, str) and type(obj) is not str:  # e.g. torch.__version__ (TorchVersion)
        return str(obj)
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
        saved, wanted = stored_spec(ckpt["spec"]).to_dict(), canonical(spec).to_dict()
        if saved != wanted:
            changed = ", ".join(f"{k}: {saved[k]!r} -> {wanted[k]!r}" for k in saved
                                if saved[k] != wanted[k])
            raise ValueError(f"{source} is from another model than this run ({changed}): use the "
                             f"same method/backbone/options, or a new checkpoint directory")
    try:
        learner.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{source} does not fit this model: {str(e).splitlines()[0]}") from e


def all_finite(learner: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``learner`` is finite (one device
    synchronisation)."""
    flags = [torch.isfinite(t).all() for t in learner.state_dict().values()
             if torch.is_tensor(t) and t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def load_learner(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[EpisodicLearner, ModelSpec, dict[str, Any]]:
    """Rebuild a trained learner from a checkpoint.

    Returns:
        ``(learner, spec, checkpoint)``; ``checkpoint["pipeline"]`` is the recorded
        :class:`ImagePipeline`, or None for a checkpoint written before pipelines were recorded
        (:func:`recorded_pipeline` turns that into a clear error).
    """
    ckpt = load_checkpoint(path)
    spec = stored_spec(ckpt["spec"])
    learner = build_learner(spec)
    restore_model(learner, ckpt, source=str(path))
    if not all_finite(learner):
        raise ValueError(f"{path} holds non-finite weights (NaN or infinity): it comes from a run "
                         f"that diverged, so its scores would mean nothing: use a checkpoint "
                         f"of a run that trained well")
    saved = ckpt.get("pipeline")
    ckpt["pipeline"] = None if saved is None else ImagePipeline.from_dict(saved, str(path))
    return learner.to(device), spec, ckpt


def recorded_pipeline(ckpt: dict[str, Any], path: str | os.PathLike,
                      stated: ImagePipeline | str | None = None) -> ImagePipeline:
    """The image pipeline to read raw files with for the model of checkpoint ``path``.

    Args:
        ckpt: from :func:`load_learner`.
        stated: a pipeline given by the user (an :class:`ImagePipeline` or its
            :meth:`~ImagePipeline.describe` text); needed for checkpoints that record none, and
            it must agree with the recorded one otherwise.
    Raises:
        ValueError: the checkpoint records no pipeline and none is stated, or they disagree.
    """
    saved = ckpt.get("pipeline")
    if isinstance(saved, dict):
        saved = ImagePipeline.from_dict(saved, str(path))
    if isinstance(stated, str):
        stated = ImagePipeline.parse(stated)
    if saved is None and stated is None:
        raise ValueError(f"{path} records no image pipeline (written before checkpoints recorded "
                         f"how training images were read), so raw files cannot be read the way "
                         f"the model saw them: retrain it with fewshot train, or state the "
                         f"pipeline (e.g. --pipeline channels=1,size=28,resample=area,invert=true "
                         f"for Omniglot)")
    if saved is not None and stated is not None and saved != stated:
        raise ValueError(f"{path} records the image pipeline {saved.describe()}, not the stated "
                         f"{stated.describe()}: leave the pipeline out to use the recorded one")
    return saved if saved is not None else stated  # type: ignore[return-value]


def _fix(field: str, trained: Any) -> str:
    """How to make a dataset's pipeline field ``field`` agree with the model's ``trained``."""
    if field == "channels":
        return f"use --channels {trained}"
    if field == "size":
        return f"use --image-size {trained}"
    if field == "crop":
        return f"{'add' if trained == 'boxes' else 'leave out'} --crop-boxes, as in training"
    return "evaluate on the dataset the model was trained on (--dataset as in training)"


def check_pipeline(spec: ModelSpec, recorded: ImagePipeline | None, dataset: ClassDataset,
                   source: str = "the checkpoint") -> None:
    """Refuse to evaluate a model on a dataset whose images are read differently from its
    training images.

    Args:
        spec: the model's spec (its channels and image size are checked even when ``recorded``
            is None, an old checkpoint).
        recorded: the checkpoint's pipeline (``load_learner(...)[2]["pipeline"]``).
        dataset: the evaluation dataset (its ``pipeline`` and image shape).
    Raises:
        ValueError: one line naming each difference and how to remove it.
    """
    c, h, _ = dataset.image_shape
    trained = {"channels": spec.in_channels, "size": spec.image_size}
    given = {"channels": c, "size": h}
    if recorded is not None and dataset.pipeline is not None:
        trained, given = recorded.to_dict(), dataset.pipeline.to_dict()
    diffs = [k for k in trained if trained[k] != given[k]]
    if not diffs:
        return
    what = "; ".join(f"{k}: trained {trained[k]!r}, dataset {given[k]!r}" for k in diffs)
    fixes = "; ".join(dict.fromkeys(_fix(k, trained[k]) for k in diffs))
    raise ValueError(f"{source} was trained on images read differently from this dataset's "
                     f"({what}): {fixes}")
