"""Episode augmentation: fill modes against numpy.pad, exact flips and quarter turns, shapes,
labels and seeded reproducibility of every transform, and the sampler hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from episodes import AugmentConfig, EpisodeAugment, EpisodeSampler, augment_images
from episodes.augment import random_affine
from episodes.fill import FILL_MODES, affine_sample, pad

HAND = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]],
                dtype=np.float32) / 19  # a hand-made 4x5 array

TRANSFORMS = {
    "hflip": AugmentConfig(hflip=0.5), "vflip": AugmentConfig(vflip=0.5),
    "rot90": AugmentConfig(rot90=0.75), "rotate": AugmentConfig(rotate=30),
    "zoom_in": AugmentConfig(zoom=(1.0, 1.5)), "zoom_out": AugmentConfig(zoom=(0.6, 1.0)),
    "crop": AugmentConfig(crop=0.6), "translate": AugmentConfig(translate=0.2),
    "noise": AugmentConfig(noise_std=0.1), "salt_pepper": AugmentConfig(salt_pepper=0.1),
    "jitter": AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.4),
    "standard": AugmentConfig.standard(), "all": AugmentConfig(
        hflip=0.5, vflip=0.5, rot90=0.5, rotate=20, zoom=(0.8, 1.2), crop=0.8, translate=0.1,
        noise_std=0.05, salt_pepper=0.02, brightness=0.2, contrast=0.2, saturation=0.2,
        fill="wrap"),
}


@pytest.mark.parametrize("mode", FILL_MODES)
@pytest.mark.parametrize("widths", [(1, 2, 3, 0), (0, 0, 0, 0), (7, 9, 11, 13)])
def test_pad_matches_numpy(mode: str, widths: tuple[int, int, int, int]) -> None:
    got = pad(torch.from_numpy(HAND), widths, mode, value=0.5).numpy()
    kw = {"constant_values": 0.5} if mode == "constant" else {}
    want = np.pad(HAND, ((widths[0], widths[1]), (widths[2], widths[3])), mode=mode, **kw)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("mode", FILL_MODES)
@pytest.mark.parametrize("shift", [(-3, 2), (6, -7), (0.5, 0)])
def test_translation_fill_matches_numpy(mode: str, shift: tuple[float, float], exact: bool
                                        ) -> None:
    """A translation that exposes area outside the image fills it like numpy.pad's mode."""
    x = torch.from_numpy(HAND)[None, None]
    dx, dy = shift
    out = affine_sample(x, torch.eye(2)[None], torch.tensor([[dx, dy]]), mode, 0.25,
                        exact=exact)[0, 0]
    p = 10
    padded = np.pad(HAND, p, mode=mode, **({"constant_values": 0.25} if mode == "constant" else {}))

    def window(ox: int, oy: int) -> np.ndarray:
        return padded[p + oy:p + oy + 4, p + ox:p + ox + 5]

    lo = int(np.floor(dx))
    want = window(lo, int(dy)) if lo == dx else (window(lo, int(dy)) + window(lo + 1, int(dy))) / 2
    np.testing.assert_allclose(out.numpy(), want, atol=1e-5)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("mode", FILL_MODES)
def test_zoom_out_fills_by_mode(mode: str, exact: bool) -> None:
    """Zooming out by 1/2 with nearest sampling reads numpy.pad's padded array at every other
    pixel (square image, odd size so centres land on pixels)."""
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    out = affine_sample(x, 2 * torch.eye(2)[None], torch.zeros(1, 2), mode, 0.0, "nearest",
                        exact=exact)
    padded = np.pad(x[0, 0].numpy(), 2, mode=mode)
    np.testing.assert_array_equal(out[0, 0].numpy(), padded[::2, ::2])


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-5, rtol=0)


def test_flips_and_quarter_turns_move_whole_pixels() -> None:
    x = torch.rand(16, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    h = augment_images(x, AugmentConfig(hflip=0.5), g)
    assert all(close(h[i], x[i]) or close(h[i], x[i].flip(-1)) for i in range(16))
    assert any(close(h[i], x[i].flip(-1)) for i in range(16))
    r = augment_images(x, AugmentConfig(rot90=1.0), g)
    turns = [[close(r[i], torch.rot90(x[i], k, (1, 2))) for k in range(4)] for i in range(16)]
    assert all(sum(t) == 1 and not t[0] for t in turns)
    assert torch.equal(augment_images(x, AugmentConfig(), g), x)  # nothing asked: identity


@pytest.mark.parametrize("mode", FILL_MODES)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_grid_sample_path_matches_index_reference(mode: str, interpolation: str) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(40, 2, 9, 8, generator=g)
    cfg = AugmentConfig(hflip=.5, vflip=.5, rot90=.5, rotate=40, zoom=(0.4, 1.5), translate=0.5)
    m, o = random_affine(40, cfg, (9, 8), g)
    fast = affine_sample(x, m.float(), o.float(), mode, 0.3, interpolation)
    ref = affine_sample(x, m.float(), o.float(), mode, 0.3, interpolation, exact=True)
    assert close(fast, ref)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_each_transform_keeps_shapes_labels_and_is_seeded(tiny_dataset, name: str) -> None:
    data = tiny_dataset(channels=3, size=8)
    cfg = TRANSFORMS[name]

    def draw(seed: int):
        sampler = EpisodeSampler(data, 5, 2, 3, episodes_per_batch=2, seed=0,
                                 augment=EpisodeAugment(cfg, cfg, seed=seed))
        return sampler.sample()

    plain = EpisodeSampler(data, 5, 2, 3, episodes_per_batch=2, seed=0).sample()
    a, b, c = draw(7), draw(7), draw(8)
    for x, y in ((a.support_x, plain.support_x), (a.query_x, plain.query_x)):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(a.support_y, plain.support_y) and torch.equal(a.query_y, plain.query_y)
    assert torch.equal(a.classes, plain.classes)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, plain.support_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_support_and_query_configured_separately(tiny_dataset) -> None:
    data = tiny_dataset(channels=1, size=8)
    plain = EpisodeSampler(data, 4, 1, 2, seed=3).sample()
    only_s = EpisodeSampler(data, 4, 1, 2, seed=3,
                            augment=EpisodeAugment(support=AugmentConfig(noise_std=0.2))).sample()
    assert torch.equal(only_s.query_x, plain.query_x)
    assert not torch.equal(only_s.support_x, plain.support_x)


def test_constant_fill_value_and_bad_config() -> None:
    x = torch.full((2, 3, 9, 9), 0.5)
    out = augment_images(x, AugmentConfig(zoom=(0.5, 0.5), fill="constant", fill_value=1.0),
                         torch.Generator().manual_seed(0))
    assert torch.equal(out[..., 0, 0], torch.ones(2, 3)) and torch.equal(out[..., 4, 4], x[..., 4, 4])
    with pytest.raises(ValueError, match="fill"):
        AugmentConfig(fill="mirror")


def test_sampler_state_restores_augmentation(tiny_dataset) -> None:
    data = tiny_dataset(channels=3, size=8)

    def sampler() -> EpisodeSampler:
        return EpisodeSampler(data, 5, 1, 2, seed=0,
                              augment=EpisodeAugment(AugmentConfig.standard(), seed=1))

    s = sampler()
    s.sample()
    state = s.state_dict()
    want = s.sample()
    resumed = sampler()
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample().support_x, want.support_x)


@pytest.mark.parametrize("size", [(224, 224), (84, 168)])
def test_random_resized_crop_areas_are_torchvisions(size: tuple[int, int]) -> None:
    """Crop windows drawn as ``RandomResizedCrop.get_params`` draws them (tries, then the central
    fallback): the same distribution of area fractions (mean, share above 0.8, quartiles)."""
    from torchvision.transforms import RandomResizedCrop

    n, (h, w) = 20000, size
    config = AugmentConfig(area=(0.08, 1.0))
    matrix, _ = random_affine(n, config, size, torch.Generator().manual_seed(0))
    ours = torch.linalg.det(matrix).abs().float()  # the window's area fraction
    torch.manual_seed(0)
    image = torch.zeros(1, h, w)
    theirs = torch.tensor([hh * ww / (h * w) for _, _, hh, ww in (
        RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n))])
    assert abs(ours.mean() - theirs.mean()) < 0.012  # about 4 standard errors
    assert abs((ours > 0.8).float().mean() - (theirs > 0.8).float().mean()) < 0.012
    for q in (0.25, 0.5, 0.75):
        assert abs(ours.quantile(q) - theirs.quantile(q)) < 0.02
