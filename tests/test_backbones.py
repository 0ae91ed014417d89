"""84x84 natural-image training works for every learner with both backbones."""

from __future__ import annotations

import pytest
import torch

from fewshot import ModelSpec, build_learner


@pytest.mark.parametrize("backbone", ["conv4", "resnet12"])
@pytest.mark.parametrize("method", ["protonet", "matching", "relation", "maml"])
def test_every_learner_trains_at_84px(method: str, backbone: str):
    torch.manual_seed(0)
    options = {"n_way": 2} if method == "maml" else {}
    learner = build_learner(ModelSpec(method, backbone, 3, 84, options))
    sx, qx = torch.rand(1, 2, 3, 84, 84), torch.rand(1, 2, 3, 84, 84)
    labels = torch.tensor([[0, 1]])
    logits = learner(sx, labels, qx, 2)
    assert logits.shape == (1, 2, 2) and torch.isfinite(logits).all()
    learner.loss(logits, labels).backward()
    grads = [p.grad for p in learner.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_backbone_feature_maps():
    from fewshot.models.backbones import Conv4, ResNet12

    x = torch.rand(2, 3, 84, 84)
    assert Conv4(3)(x).shape == (2, 1600)
    assert Conv4(3, flatten=False, unpooled_last=2)(x).shape == (2, 64, 21, 21)
    net = ResNet12(3, channels=(8, 8, 8, 16))
    assert net(x).shape == (2, 16)
    net.flatten = False
    assert net(x).shape == (2, 16, 5, 5)
