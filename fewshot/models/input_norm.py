"""Mean/std input normalisation, recorded in the model's spec and applied by its backbone.

Every data path hands a model float images in ``[0, 1]`` (:func:`episodes.to_unit_float`).
Backbones trained from scratch here take them as they are; weights trained elsewhere expect their
own normalisation: torchvision's ImageNet weights ``(x - mean) / std`` with ImageNet's
mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``, timm's the ``mean``/``std`` of
the model's ``pretrained_cfg``. Without it such a backbone reads every image wrongly, and nothing
fails.

So the normalisation is part of the model: ``ModelSpec.normalize`` (``{"mean": [...], "std":
[...]}`` or None) is stored in every checkpoint, and :func:`add_input_norm` makes the backbone
(built by :func:`fewshot.models.backbones.spec_backbone`, before any copy of it is taken: the momentum
targets of BYOL and MoCo normalise too) apply it as its first operation (a forward pre-hook with
non-persistent buffers, so the backbone's parameter names and state dict, and hence weights
files, are unchanged). Training, evaluation, the heads fitted per episode, fine-tuning and
``predict`` all call the backbone, so none of them can skip it, and a checkpoint cannot be read
with another normalisation than it was trained with.

``--normalize`` chooses it: ``auto`` (the default) is ImageNet's for torchvision models, the
model's own for ``timm:`` models and none for ``conv4``/``resnet12``; ``none``; ``imagenet``;
``inception`` (0.5, 0.5, 0.5 both); or explicit ``MEAN/STD`` such as ``0.5,0.5,0.5/0.25,0.25,0.25``.
Grayscale images (1 channel) with 3-channel statistics: a torchvision model repeats the channel
to three, so the three statistics apply as they are; other backbones take one channel, so the
mean and std are averaged to one value.
"""

from __future__ import annotations

import torch
from torch import nn

from ..values import NAMED, Normalize, check_normalize, parse_normalize
from .zoo import TIMM_PREFIX, torchvision_names


def backbone_expects(backbone: str) -> Normalize:
    """What ``auto`` gives for a backbone name (see the module docstring)."""
    if backbone.startswith(TIMM_PREFIX):
        try:
            from timm.models import get_pretrained_cfg
        except ImportError:
            raise ValueError(f"backbone {backbone} needs timm: pip install 'fewshot[timm]' "
                             f"(timm>=0.9)") from None
        cfg = get_pretrained_cfg(backbone[len(TIMM_PREFIX):])
        mean, std = (cfg.mean, cfg.std) if cfg is not None else NAMED["imagenet"]
        return {"mean": list(mean), "std": list(std)}
    if backbone in ("conv4", "resnet12") or backbone not in torchvision_names():
        return None
    mean, std = NAMED["imagenet"]
    return {"mean": list(mean), "std": list(std)}


def resolve_normalize(text: str, backbone: str, in_channels: int) -> Normalize:
    """The ``normalize`` of a spec from ``--normalize`` (``auto``, ``none``, a name or
    ``MEAN/STD``) for ``backbone`` on ``in_channels``-channel images: 3-channel statistics are
    averaged to one for a backbone that takes one channel (module docstring).

    Raises:
        ValueError: as :func:`parse_normalize`, or a channel count the backbone does not take.
    """
    norm = parse_normalize(text)
    if norm == "auto":
        norm = backbone_expects(backbone)
    if norm is None:
        return None
    takes = channels_taken(backbone, in_channels)
    if len(norm["mean"]) == 3 and takes == 1:
        norm = {k: [sum(v) / 3] for k, v in norm.items()}
    return check_normalize(norm, takes, f"normalisation {text.strip()!r} for backbone {backbone} "
                                        f"with {in_channels}-channel images")


def describe_normalize(norm: Normalize) -> str:
    """``norm`` as ``--normalize`` takes it: ``none`` or ``MEAN/STD``."""
    if norm is None:
        return "none"
    return "/".join(",".join(str(v) for v in norm[k]) for k in ("mean", "std"))


def require_same_normalize(source: str, trained: Normalize, wanted: Normalize, fix: str) -> None:
    """Refuse weights trained with another input normalisation than the one they are about to
    get: one line naming ``source``, both normalisations (as ``--normalize`` takes them) and
    ``fix``."""
    if trained != wanted:
        raise ValueError(f"{source} was trained with --normalize {describe_normalize(trained)}, "
                         f"and here it would get --normalize {describe_normalize(wanted)}: {fix}")


def channels_taken(backbone: str, in_channels: int) -> int:
    """The channels the backbone's first layer sees: 3 for torchvision models (they repeat a
    grayscale channel), else ``in_channels``."""
    return 3 if backbone in torchvision_names() else in_channels


def _normalise_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: ``[B, C, H, W]`` images -> ``(x - mean) / std`` per channel."""
    return ((args[0] - module.input_mean) / module.input_std, *args[1:])


def add_input_norm(backbone: nn.Module, norm: Normalize) -> nn.Module:
    """Make ``backbone`` normalise its input with ``norm`` first (nothing when None); in place,
    returns it. The statistics are non-persistent buffers ``input_mean``/``input_std``
    ``[1, C, 1, 1]``: they follow ``.to(device)`` and stay out of the state dict."""
    if norm is None:
        return backbone
    if hasattr(backbone, "input_mean"):
        raise ValueError("this backbone already normalises its input")
    for name in ("mean", "std"):
        backbone.register_buffer(f"input_{name}", torch.tensor(norm[name]).view(1, -1, 1, 1),
                                 persistent=False)
    backbone.register_forward_pre_hook(_normalise_input, prepend=True)
    return backbone
