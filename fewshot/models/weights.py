"""Backbone weights: the state dict a weights file holds, fitted to a backbone.

A weights file (read by :class:`fewshot.engine.checkpoint.CheckpointFile`) is either a fewshot
checkpoint (its learner's backbone weights are taken: a supervised pre-training's ``best.pt``, a
ProtoNet's, ...) or a plain state dict of the backbone (``torch.save(backbone.state_dict(),
path)``; torchvision's and timm's weight files are such files; a dict holding it under
``"state_dict"`` or ``"model"``, and DataParallel's ``module.`` prefixes, are accepted too).
Weights of the classifier the backbone was built without (``removed_head``,
:mod:`fewshot.models.zoo`) are left out. Anything else that does not fit is refused in one line
naming the missing and unexpected layers and the shape mismatches.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

SAVE_WEIGHTS = "save the weights with torch.save(model.state_dict(), path)"


def plain_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    """The backbone state dict in ``obj``, the contents of a weights file that is not a fewshot
    checkpoint (see the module docstring); ``source`` names the file in errors.

    Raises:
        ValueError: ``obj`` holds no mapping of names to tensors.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise ValueError(f"{source} is not a state dict (a mapping of layer names to tensors): "
                         f"{SAVE_WEIGHTS}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def backbone_state(learner: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``state``, a state dict of ``learner``, that belong to its backbone, named as
    in the backbone (empty when the learner has no ``backbone``)."""
    backbone = getattr(learner, "backbone", None)
    prefix = next((n for n, m in learner.named_modules() if m is backbone), None)
    return {k[len(prefix) + 1:]: v for k, v in state.items()
            if prefix and k.startswith(prefix + ".")}


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


def fit_backbone(backbone: nn.Module, state: Mapping[str, Tensor], source: str, name: str
                 ) -> None:
    """Load ``state`` into ``backbone`` (called ``name`` in errors, the weights ``source``), in
    place, without the weights of its removed classifier.

    Raises:
        ValueError: the weights do not fit (:func:`check_fits`) or are not all finite.
    """
    head = getattr(backbone, "removed_head", None)
    if head:
        state = {k: v for k, v in state.items() if not (k == head or k.startswith(head + "."))}
    check_fits(backbone, state, source, name)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{source} holds non-finite weights (NaN or infinity, e.g. {bad[0]}): "
                         f"it comes from a run that diverged: give weights of a run that trained "
                         f"well")
    backbone.load_state_dict(state)


def backbone_of(learner: nn.Module) -> nn.Module:
    """The backbone of a learner: its ``backbone`` (every learner has one,
    :class:`~fewshot.models.learner.EpisodicLearner`)."""
    backbone = getattr(learner, "backbone", None)
    if isinstance(backbone, nn.Module):
        return backbone
    raise ValueError(f"{type(learner).__name__} has no backbone")
