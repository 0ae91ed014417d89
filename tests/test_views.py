"""The self-supervised views: random resized crops, hue, grayscale, blur, solarisation against
their definitions, and two seeded views per image from the batch sampler (resumable)."""

from __future__ import annotations

import math

import pytest
import torch

from episodes import VIEW_PRESETS, AugmentConfig, ImageBatchSampler, augment_images, view_configs
from episodes.augment import YIQ, gaussian_blur, random_affine


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_resized_crop_windows() -> None:
    cfg = AugmentConfig(area=(0.25, 0.25), ratio=(1.0, 1.0))
    matrix, offset = random_affine(50, cfg, (32, 32), g())
    assert torch.allclose(matrix, 0.5 * torch.eye(2, dtype=torch.float64).expand(50, 2, 2))
    assert offset.abs().max() <= 0.25 * 32 + 1e-9  # the window stays inside the image
    cfg = AugmentConfig(area=(0.08, 1.0), ratio=(0.5, 2.0))
    matrix, _ = random_affine(2000, cfg, (32, 32), g())
    w, h = matrix[:, 0, 0], matrix[:, 1, 1]
    assert w.max() <= 1 and h.max() <= 1 and (w * h).min() >= 0.08 - 1e-9
    assert (w / h).min() < 0.6 and (w / h).max() > 1.6  # aspect ratios spread over the range


def test_grayscale_solarize_hue_jitter_probability() -> None:
    x = torch.rand(6, 3, 8, 8, generator=g())
    gray = augment_images(x, AugmentConfig(grayscale=1.0), g())
    luma = torch.einsum("c,bchw->bhw", YIQ[0].float(), x)
    assert torch.allclose(gray, luma.unsqueeze(1).expand_as(x), atol=1e-6)
    sol = augment_images(x, AugmentConfig(solarize=1.0), g())
    assert torch.allclose(sol, torch.where(x >= 0.5, 1 - x, x))
    assert torch.equal(augment_images(x, AugmentConfig(brightness=0.5, hue=0.3, jitter_p=0.0),
                                      g()), x)
    flat = torch.full((2, 3, 4, 4), 0.4)  # a gray image has no hue to turn
    assert torch.allclose(augment_images(flat, AugmentConfig(hue=0.5), g()), flat, atol=1e-6)
    mid = 0.25 + 0.5 * x  # inside [0, 1] after the turn: no clamping
    turned = augment_images(mid, AugmentConfig(hue=0.1), g())
    assert not torch.allclose(turned, mid)
    lum = torch.einsum("c,bchw->bhw", YIQ[0].float(), turned)  # a hue turn keeps the luma
    assert torch.allclose(lum, torch.einsum("c,bchw->bhw", YIQ[0].float(), mid), atol=1e-5)


def test_gaussian_blur_by_hand() -> None:
    x = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    x[:, :, 16, 16] = 1.0
    out = gaussian_blur(x, torch.tensor([1.5, 0.0]))
    k = 3  # int(0.1 * 32) // 2 * 2 + 1
    w = [math.exp(-(t - k // 2) ** 2 / (2 * 1.5**2)) for t in range(k)]
    w = [v / sum(w) for v in w]
    for dy in range(k):
        for dx in range(k):
            assert out[0, 0, 15 + dy, 15 + dx].item() == pytest.approx(w[dy] * w[dx], rel=1e-9)
    assert torch.equal(out[1], x[1])  # sigma 0: unchanged
    assert out[0].sum().item() == pytest.approx(1.0)


def test_two_seeded_views_resume(tiny_dataset) -> None:
    ds = tiny_dataset(num_classes=4, per_class=4, channels=3, size=16)
    for name in VIEW_PRESETS:
        assert len(view_configs(name, 2)) == 2
    with pytest.raises(ValueError, match="choose one of simclr"):
        view_configs("strong", 2)
    sampler = ImageBatchSampler(ds, 4, seed=3, views=view_configs("byol", 2))
    batch = sampler.sample()
    assert batch.views.shape == (2, 4, 3, 16, 16) and batch.index.shape == (4,)
    assert not torch.equal(batch.views[0], batch.views[1])
    assert torch.equal(batch.labels, ds.targets[batch.index])
    state = sampler.state_dict()
    a = sampler.sample()
    sampler.load_state_dict(state)
    b = sampler.sample()
    again = ImageBatchSampler(ds, 4, seed=3, views=view_configs("byol", 2))
    again.sample()
    c = again.sample()
    assert torch.equal(a.views, b.views) and torch.equal(a.views, c.views)
    with pytest.raises(ValueError, match="not both"):
        ImageBatchSampler(ds, 4, augment=AugmentConfig(), views=(None,))
