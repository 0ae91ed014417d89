"""Backbone weights from local files, read with ``torch.load(weights_only=True)``.

A weights file is either a fewshot checkpoint (its learner's backbone weights are taken:
a supervised pre-training's ``best.pt``, a ProtoNet's, ...) or a plain state dict of the backbone
(``torch.save(backbone.state_dict(), path)``; torchvision's and timm's weight files are such
files; a dict holding it under ``"state_dict"`` or ``"model"``, and DataParallel's ``module.``
prefixes, are accepted too). Weights of the classifier the backbone was built without
(``removed_head``, :mod:`fewshot.models.zoo`) are left out. Anything else that does not fit is refused in
one line naming the missing and unexpected layers and the shape mismatches.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..engine.checkpoint import FORMAT
from ..registry import build_learner, stored_spec


def _load(path: Path, flag: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # torch's text for objects weights_only refuses
            raise ValueError(f"{flag} {path} is not a readable PyTorch file: give a state dict "
                             f"saved with torch.save") from None
        raise ValueError(f"{flag} {path} holds objects other than tensors and plain containers, "
                         f"so it was not loaded: save the weights with "
                         f"torch.save(model.state_dict(), path)") from None
    except Exception as e:  # noqa: BLE001 - any other read failure: not a weights file
        raise ValueError(f"{flag} {path} is not a readable PyTorch file ({type(e).__name__}): "
                         f"give a state dict saved with torch.save") from None


def read_backbone_state(path: str | os.PathLike, flag: str = "--weights"
                        ) -> tuple[dict[str, Tensor], dict | None]:
    """The backbone state dict stored in ``path`` (see the module docstring), and, when ``path``
    is a fewshot checkpoint, its ``spec`` and ``pipeline`` (else None).

    Raises:
        ValueError: not a PyTorch file, a fewshot checkpoint without a backbone, or no mapping of
            names to tensors.
    """
    path = Path(path)
    obj = _load(path, flag)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        learner = build_learner(stored_spec(obj["spec"]))  # where its backbone lives in it
        backbone = getattr(learner, "backbone", None)
        prefix = next((n for n, m in learner.named_modules() if m is backbone), None)
        state = {k[len(prefix) + 1:]: v for k, v in obj["model"].items()
                 if prefix and k.startswith(prefix + ".")}
        if not state:
            raise ValueError(f"{flag} {path} is a checkpoint of a {obj['spec']['method']} model, "
                             f"which has no backbone to take weights from")
        return state, {"spec": obj["spec"], "pipeline": obj.get("pipeline")}
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise ValueError(f"{flag} {path} is not a state dict (a mapping of layer names to "
                         f"tensors): save the weights with torch.save(model.state_dict(), path)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj), None


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def check_fits(backbone: nn.Module, state: Mapping[str, Tensor], source: str, name: str) -> None:
    """Raise one ``ValueError`` line unless ``state`` has exactly the backbone's entries, with
    their shapes."""
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} (file {list(state[k].shape)}, backbone {list(own[k].shape)})" for k in own
              if k in state and state[k].shape != own[k].shape]
    problems = ([f"missing {_names(missing)}"] if missing else []) + (
        [f"unexpected {_names(unexpected)}"] if unexpected else []) + (
        [f"shape mismatch in {_names(shapes)}"] if shapes else [])
    if problems:
        raise ValueError(f"{source} does not fit backbone {name}: {'; '.join(problems)}: give "
                         f"weights saved from a {name} backbone with the same input channels")


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, name: str,
                          flag: str = "--weights") -> dict | None:
    """Load the weights in ``path`` into ``backbone`` (called ``name`` in errors), in place.
    Returns the checkpoint's ``spec`` and ``pipeline`` when ``path`` is a fewshot checkpoint."""
    state, meta = read_backbone_state(path, flag)
    head = getattr(backbone, "removed_head", None)
    if head:
        state = {k: v for k, v in state.items() if not (k == head or k.startswith(head + "."))}
    check_fits(backbone, state, f"{flag} {path}", name)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{flag} {path} holds non-finite weights (NaN or infinity, e.g. "
                         f"{bad[0]}): it comes from a run that diverged: give weights of a run "
                         f"that trained well")
    backbone.load_state_dict(state)
    return meta


def backbone_of(learner: nn.Module) -> nn.Module:
    """The backbone of a learner: its ``backbone`` (every learner has one,
    :class:`~fewshot.models.learner.EpisodicLearner`)."""
    backbone = getattr(learner, "backbone", None)
    if isinstance(backbone, nn.Module):
        return backbone
    raise ValueError(f"{type(learner).__name__} has no backbone")
