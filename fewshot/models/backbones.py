"""Backbones that map images ``[B, C, H, W]`` to features. Any ``nn.Module`` that does so can serve."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .input_norm import add_input_norm
from .zoo import external_backbone

if TYPE_CHECKING:
    from .learner import ModelSpec


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    """3x3 conv (padding 1), BatchNorm, ReLU, then 2x2 max-pool when ``pool``."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1),
                               nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """The Conv-4 backbone of the few-shot papers: four conv blocks of ``hidden`` filters.

    ``[B, C, H, W] -> [B, hidden * (H/16) * (W/16)]`` (64 for 28x28, 1600 for 84x84). With
    ``flatten=False`` the feature map ``[B, hidden, h, w]`` is returned; ``unpooled_last`` blocks
    (counted from the end) can keep their spatial size (Relation Networks on 84x84 use 2).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, flatten: bool = True,
                 unpooled_last: int = 0) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(conv_block(in_channels if i == 0 else hidden, hidden,
                                                 pool=i < 4 - unpooled_last) for i in range(4)))
        self.flatten = flatten
        self.out_channels = hidden

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(x)
        return x.flatten(1) if self.flatten else x


class ResidualBlock(nn.Module):
    """ResNet-12 block: three 3x3 conv-BN (LeakyReLU 0.1) with a 1x1 conv-BN shortcut, then 2x2
    max-pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3,
                                 padding=1, bias=False), nn.BatchNorm2d(out_channels)]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                      nn.BatchNorm2d(out_channels))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """ResNet-12 (four residual blocks, widths 64-160-320-640 as in MetaOptNet/TADAM), global
    average pooling: ``[B, C, H, W] -> [B, channels[-1]]``. With ``flatten=False`` the feature map
    ``[B, channels[-1], H/16, W/16]`` is returned instead (5x5 for 84x84)."""

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (64, 160, 320, 640),
                 flatten: bool = True) -> None:
        super().__init__()
        widths = (in_channels, *channels)
        self.blocks = nn.Sequential(*(ResidualBlock(widths[i], widths[i + 1])
                                      for i in range(len(channels))))
        self.out_channels, self.flatten = channels[-1], flatten

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(x)
        return x.mean(dim=(2, 3)) if self.flatten else x


def feature_shape(backbone: nn.Module, in_channels: int, image_size: int) -> torch.Size:
    """Output shape (without the batch) of ``backbone`` on ``[2, C, S, S]`` zeros."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        shape = backbone(torch.zeros(2, in_channels, image_size, image_size)).shape[1:]
    backbone.train(was_training)
    return shape


BACKBONES = {"conv4": Conv4, "resnet12": ResNet12}


def spec_backbone(spec: ModelSpec, hidden: int | None = None, **kwargs) -> nn.Module:
    """The backbone a learner's builder makes for ``spec``: :func:`make_backbone` of its name and
    channels, normalising its input as ``spec.normalize`` says (:mod:`fewshot.models.input_norm`). Built
    here, before the builder copies it (the momentum targets of BYOL and MoCo), so every copy
    normalises too."""
    return add_input_norm(make_backbone(spec.backbone, spec.in_channels, hidden, **kwargs),
                          spec.normalize)


def make_backbone(name: str, in_channels: int, hidden: int | None = None, **kwargs) -> nn.Module:
    """Build a backbone by name: "conv4", "resnet12", a torchvision classification model
    ("resnet18", ...) or "timm:<name>" (:mod:`fewshot.models.zoo`), without weights. ``hidden``: Conv-4's
    width (the methods' ``hidden`` option; None: 64), an error for other backbones."""
    if hidden is not None:
        if name != "conv4":
            raise ValueError(f"option hidden (the width of Conv-4) applies to backbone conv4, "
                             f"not {name!r}: remove it")
        kwargs["hidden"] = hidden
    if name in BACKBONES:
        return BACKBONES[name](in_channels=in_channels, **kwargs)
    backbone = external_backbone(name, in_channels, **kwargs)
    if backbone is None:
        raise ValueError(f"unknown backbone {name!r}: choose conv4, resnet12, a torchvision "
                         f"classification model (resnet18, efficientnet_b0, ...: "
                         f"torchvision.models.list_models()) or timm:<name> (timm installed)")
    return backbone


def feature_dim(backbone: nn.Module, in_channels: int, image_size: int) -> int:
    """Length of the flattened features of ``backbone`` for one image."""
    return int(torch.Size(feature_shape(backbone, in_channels, image_size)).numel())
