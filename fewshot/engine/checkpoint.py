"""Checkpoints: written atomically, carrying the model spec so any command can rebuild the model,
and the image pipeline (:class:`episodes.ImagePipeline`) its training data was read with, so every
command reads files the same way. Every command reads them, and weights files (``--init``,
``--weights``), through one reader, :class:`CheckpointFile`.

A checkpoint may also hold ``temperature``: the scalar the learner's logits are divided by before
the softmax for calibrated probabilities (:mod:`fewshot.calibration`), fitted by ``fewshot train``
on its validation episodes (:func:`fewshot.engine.calibrate.set_temperature`); a checkpoint
without it reads as 1."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from episodes import ClassDataset, ImagePipeline
from episodes.io import atomic_torch_save

from ..calibration import stored_temperature
from ..models.learner import EpisodicLearner, ModelSpec
from ..models.weights import SAVE_WEIGHTS, backbone_state, fit_backbone, plain_state_dict
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


def _finite_flags(learner: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Name -> whether that floating-point parameter or buffer of ``learner`` is finite (a 0-d
    bool tensor on its device, not yet read)."""
    return {name: torch.isfinite(t).all() for name, t in learner.state_dict().items()
            if torch.is_tensor(t) and t.is_floating_point()}


def all_finite(learner: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``learner`` is finite (one device
    synchronisation)."""
    flags = list(_finite_flags(learner).values())
    return bool(torch.stack(flags).all()) if flags else True


def non_finite_names(learner: torch.nn.Module, most: int = 3) -> list[str]:
    """The names of up to ``most`` floating-point parameters and buffers of ``learner`` holding a
    NaN or an infinity (empty when all are finite): what a divergence message names."""
    return [name for name, ok in _finite_flags(learner).items() if not bool(ok)][:most]


class _Texts(NamedTuple):
    """One-line errors for a file that cannot be read, with the fields ``{path}``, ``{flag}``,
    ``{error}`` (the first line of the reading error) and ``{kind}`` (its type)."""

    missing: str
    foreign: str  # objects that weights_only refuses: nothing in the file ran
    not_torch: str
    unreadable: str


_TRAINED = "use a checkpoint written by fewshot train"
_CHECKPOINT_TEXTS = _Texts(
    "{what} {path} does not exist: train first (fewshot train) or check the path",
    "{path} is not a readable checkpoint: it holds objects other than tensors and plain "
    "containers, which fewshot never writes, so it was not loaded and nothing in it ran: "
    + _TRAINED,
    "{path} is not a readable checkpoint: it is not a PyTorch file: " + _TRAINED,
    "{path} is not a readable checkpoint ({error}): " + _TRAINED)
_WEIGHTS_TEXTS = _Texts(
    "{flag} {path} does not exist: check the path",
    "{flag} {path} holds objects other than tensors and plain containers, so it was not loaded: "
    + SAVE_WEIGHTS,
    "{flag} {path} is not a readable PyTorch file: give a state dict saved with torch.save",
    "{flag} {path} is not a readable PyTorch file ({kind}): give a state dict saved with "
    "torch.save")


class CheckpointFile:
    """A checkpoint or weights file, read once with ``torch.load(weights_only=True)``: nothing in
    it runs.

    Args:
        path: the file.
        flag: the option that named a weights file (``--init``, ``--weights``), for a file that
            may also be a plain state dict (:mod:`fewshot.models.weights`); None for a file that
            must be a fewshot checkpoint (eval and predict ``--checkpoint``, resuming).
        map_location: where the tensors are loaded.
        what: how errors name a checkpoint (``"checkpoint"``, or the flag that gave it).
    Raises:
        FileNotFoundError: no such file. ValueError: not a file PyTorch reads safely. Both one
            line naming the file (and ``flag``) and the fix.
    """

    def __init__(self, path: str | os.PathLike, flag: str | None = None,
                 map_location: str | torch.device = "cpu", what: str = "checkpoint"):
        self.path, self.what = Path(path), what
        self.flag = flag
        self.source = f"{flag} {self.path}" if flag else str(self.path)
        self.content = self._read(map_location)

    def _read(self, map_location: str | torch.device) -> object:
        texts = _WEIGHTS_TEXTS if self.flag else _CHECKPOINT_TEXTS
        where = {"path": self.path, "flag": self.flag, "what": self.what}
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.flag or self.what} {self.path} is a folder: give a "
                                    f"{'weights' if self.flag else 'checkpoint'} file in it"
                                    + ("" if self.flag else " (best.pt or last.pt)"))
        if not self.path.is_file():
            raise FileNotFoundError(texts.missing.format(**where))
        try:
            return torch.load(self.path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:  # torch's text suggests unsafe loading: not repeated
            text = texts.foreign if "GLOBAL" in str(e) else texts.not_torch
            raise ValueError(text.format(**where)) from None
        except Exception as e:  # noqa: BLE001 - any other read failure means the same thing here
            error = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(texts.unreadable.format(**where, error=error,
                                                     kind=type(e).__name__)) from e

    @property
    def is_fewshot(self) -> bool:
        """Whether the file is a fewshot checkpoint (written by :func:`save_checkpoint`)."""
        return isinstance(self.content, Mapping) and self.content.get("format") == FORMAT

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint's contents (``spec``, ``model``, ...), refusing any other file."""
        if not self.is_fewshot:
            raise ValueError(f"{self.path} is not a fewshot checkpoint (written by fewshot train)")
        return self.content  # type: ignore[return-value]

    def learner(self, device: str | torch.device = "cpu"
                ) -> tuple[EpisodicLearner, ModelSpec, dict[str, Any]]:
        """Rebuild the trained learner.

        Returns:
            ``(learner, spec, checkpoint)``; ``checkpoint["pipeline"]`` is the recorded
            :class:`ImagePipeline`, or None for a checkpoint written before pipelines were
            recorded (:func:`recorded_pipeline` turns that into a clear error);
            ``checkpoint["temperature"]`` a positive float (1.0 when none was fitted).
        """
        ckpt = dict(self.checkpoint())
        spec = stored_spec(ckpt["spec"])
        learner = build_learner(spec)
        restore_model(learner, ckpt, source=str(self.path))
        if not all_finite(learner):
            raise ValueError(f"{self.path} holds non-finite weights (NaN or infinity): it comes "
                             f"from a run that diverged, so its scores would mean nothing: use a "
                             f"checkpoint of a run that trained well")
        saved = ckpt.get("pipeline")
        ckpt["pipeline"] = None if saved is None else ImagePipeline.from_dict(saved, str(self.path))
        ckpt["temperature"] = stored_temperature(ckpt.get("temperature"), str(self.path))
        return learner.to(device), spec, ckpt

    def backbone_state(self) -> tuple[dict[str, Tensor], dict | None]:
        """The backbone state dict stored in the file: a fewshot checkpoint's learner's backbone,
        or a plain state dict (:func:`~fewshot.models.weights.plain_state_dict`); and, for a
        fewshot checkpoint, its ``spec`` and ``pipeline`` (else None).

        Raises:
            ValueError: a fewshot checkpoint without a backbone, or no state dict.
        """
        if not self.is_fewshot:
            return plain_state_dict(self.content, self.source), None
        ckpt = self.checkpoint()
        state = backbone_state(build_learner(stored_spec(ckpt["spec"])), ckpt["model"])
        if not state:
            raise ValueError(f"{self.source} is a checkpoint of a {ckpt['spec']['method']} model, "
                             f"which has no backbone to take weights from")
        return state, {"spec": ckpt["spec"], "pipeline": ckpt.get("pipeline")}

    def load_backbone(self, backbone: nn.Module, name: str) -> dict | None:
        """Load the file's backbone weights into ``backbone`` (called ``name`` in errors), in
        place (:func:`~fewshot.models.weights.fit_backbone`). Returns the checkpoint's ``spec``
        and ``pipeline`` when the file is a fewshot checkpoint, else None."""
        state, meta = self.backbone_state()
        fit_backbone(backbone, state, self.source, name)
        return meta


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    what: str = "checkpoint") -> dict[str, Any]:
    """Read a fewshot checkpoint (:meth:`CheckpointFile.checkpoint`), with a clear error for a
    missing file or a file that is not one (``what`` names it, e.g. the flag that gave it)."""
    return CheckpointFile(path, map_location=map_location, what=what).checkpoint()


def load_learner(path: str | os.PathLike, device: str | torch.device = "cpu",
                 what: str = "checkpoint") -> tuple[EpisodicLearner, ModelSpec, dict[str, Any]]:
    """Rebuild a trained learner from a checkpoint (:meth:`CheckpointFile.learner`)."""
    return CheckpointFile(path, what=what).learner(device)


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, name: str,
                          flag: str = "--weights") -> dict | None:
    """Load the weights in ``path``, given with ``flag``, into ``backbone`` (called ``name`` in
    errors), in place (:meth:`CheckpointFile.load_backbone`)."""
    return CheckpointFile(path, flag).load_backbone(backbone, name)


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
