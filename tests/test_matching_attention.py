"""Matching Networks' attention of queries over the support set (the heat map of notebook 03)."""

from __future__ import annotations

import pytest
import torch

from fewshot.methods.matching import MatchingNet, attention_to_class_log_probs, cosine_attention
from fewshot.models.backbones import Conv4


@pytest.mark.parametrize("fce", [False, True])
def test_attention_is_a_distribution_over_the_support_and_gives_the_logits(fce):
    torch.manual_seed(0)
    net = MatchingNet(Conv4(1, hidden=8), feature_dim=8, fce=fce, fce_steps=2).eval()
    sx, qx = torch.rand(2, 6, 1, 16, 16), torch.rand(2, 4, 1, 16, 16)
    sy = torch.tensor([0, 0, 1, 1, 2, 2]).repeat(2, 1)
    with torch.no_grad():
        att = net.attention(sx, qx)
        logits = net(sx, sy, qx, 3)
        assert att.shape == (2, 4, 6)
        torch.testing.assert_close(att.exp().sum(-1), torch.ones(2, 4))
        torch.testing.assert_close(logits, attention_to_class_log_probs(att, sy, 3))
        if not fce:  # plain attention: softmax over q . s_i / |s_i| of the backbone features
            f = net.backbone(torch.cat([sx, qx], 1).flatten(0, 1)).view(2, 10, -1)
            expected = torch.log_softmax(
                f[:, 6:] @ torch.nn.functional.normalize(f[:, :6], dim=-1).transpose(1, 2), -1)
            torch.testing.assert_close(att, expected)
            torch.testing.assert_close(att, cosine_attention(f[:, 6:], f[:, :6]))
