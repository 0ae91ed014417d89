"""Backbones from torchvision and timm by name, and freezing layers by name.

:func:`fewshot.models.backbones.make_backbone` builds ``conv4`` and ``resnet12`` itself and comes here
for every other name:

- a torchvision classification model (``resnet18``, ``efficientnet_b0``, ...: any name of
  ``torchvision.models.list_models(module=torchvision.models)``), built without weights by
  ``torchvision.models.get_model``; its final ``nn.Linear`` classifier is replaced by
  ``nn.Identity``, so it maps images to the classifier's input features (ResNet-18: 512).
  Grayscale images (``in_channels=1``) are repeated to the three channels the model takes.
- a timm model, ``timm:<name>`` (the optional extra ``pip install 'fewshot[timm]'``), built by
  ``timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)``: timm's own
  way of returning pooled features.

Weights come from local files only (:mod:`fewshot.models.weights`); nothing is downloaded. The name of
the removed classifier is kept in the backbone's ``removed_head`` attribute, so that a weights
file saved with its classifier (torchvision's and timm's files are) loads without it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

TIMM_PREFIX = "timm:"
# torchvision models whose defaults add auxiliary classifiers: built without them
TORCHVISION_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True},
                      "inception_v3": {"aux_logits": False, "init_weights": True}}


def torchvision_names() -> list[str]:
    """The classification models torchvision builds by name."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _repeat_gray(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: ``[B, 1, H, W]`` images repeated to ``[B, 3, H, W]``."""
    return (args[0].expand(-1, 3, -1, -1), *args[1:])


def torchvision_backbone(name: str, in_channels: int) -> nn.Module:
    """torchvision's ``name`` without weights, its last ``nn.Linear`` replaced by ``nn.Identity``.

    Raises:
        ValueError: the model has no ``nn.Linear`` classifier to remove, or ``in_channels`` is
            not 1 or 3.
    """
    import torchvision

    if in_channels not in (1, 3):
        raise ValueError(f"backbone {name} takes 1- or 3-channel images, not {in_channels}")
    model = torchvision.models.get_model(name, weights=None, **TORCHVISION_KWARGS.get(name, {}))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"torchvision model {name} has no nn.Linear classifier to remove: "
                         f"choose another backbone")
    head = linears[-1]
    parent, _, child = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    model.removed_head = head
    if in_channels == 1:
        model.register_forward_pre_hook(_repeat_gray)
    return model


def timm_backbone(name: str, in_channels: int) -> nn.Module:
    """``timm:<name>`` without weights and without its classifier (``num_classes=0``)."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"backbone {TIMM_PREFIX}{name} needs timm: pip install 'fewshot[timm]' "
                         f"(timm>=0.9)") from None
    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r}: see timm.list_models() for the names")
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
    model.removed_head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    return model


def external_backbone(name: str, in_channels: int, **kwargs) -> nn.Module | None:
    """A torchvision or timm backbone by name (None when ``name`` is neither)."""
    if not name.startswith(TIMM_PREFIX) and name not in torchvision_names():
        return None
    if kwargs:
        raise ValueError(f"backbone {name} takes no options ({', '.join(sorted(kwargs))}): only "
                         f"conv4 and resnet12 do; use the method's defaults with {name}")
    if name.startswith(TIMM_PREFIX):
        return timm_backbone(name[len(TIMM_PREFIX):], in_channels)
    return torchvision_backbone(name, in_channels)


def matches(name: str, pattern: str) -> bool:
    """Whether parameter ``name`` is in the layer ``pattern``: the layer itself or anything under
    it (``layer4`` matches ``layer4.0.conv1.weight``), or an ``fnmatch`` pattern (``*.bn*``)."""
    return name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)


def layer_names(module: nn.Module, depth: int = 2) -> list[str]:
    """The distinct first ``depth`` parts of the parameter names (for error messages)."""
    return list(dict.fromkeys(".".join(n.split(".")[:depth])
                              for n, _ in module.named_parameters()))


def select_parameters(module: nn.Module, patterns: Sequence[str], what: str = "layer pattern"
                      ) -> list[str]:
    """Names of the parameters of ``module`` in any of the layers ``patterns`` (see
    :func:`matches`); ``["all"]`` selects every parameter.

    Raises:
        ValueError: a pattern matches no parameter (the message lists the layers there are).
    """
    names = [n for n, _ in module.named_parameters()]
    if list(patterns) == ["all"]:
        return names
    for p in patterns:
        if not any(matches(n, p) for n in names):
            shown = layer_names(module)
            raise ValueError(f"{what} {p!r} matches no layer of the backbone: its layers are "
                             f"{', '.join(shown[:12])}{', ...' if len(shown) > 12 else ''} "
                             f"(a name matches itself and everything under it; * wildcards)")
    return [n for n in names if any(matches(n, p) for p in patterns)]


def freeze(module: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Stop training the layers ``patterns`` of ``module``: their parameters
    (``requires_grad=False``) and the running statistics of their BatchNorm layers (``momentum``
    0, so training mode still normalises with batch statistics but leaves the running mean and
    variance as they were, for the heads and evaluation that use them). Returns the names of the
    frozen parameters."""
    names = select_parameters(module, patterns, "--freeze")
    params = dict(module.named_parameters())
    for n in names:
        params[n].requires_grad_(False)
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and any(
                matches(f"{name}.running_mean", p) for p in patterns):
            sub.momentum = 0.0
    return names


def split_patterns(text: str) -> list[str]:
    """``"blocks.2, blocks.3"`` -> ``["blocks.2", "blocks.3"]``."""
    return [p.strip() for p in text.split(",") if p.strip()]
