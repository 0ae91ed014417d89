"""Labelled subsets, the unlabelled pool, the semi-supervised sampler and the strong views."""

from __future__ import annotations

import pytest
import torch

from episodes import (
    SemiSupervisedSampler,
    StrongAugment,
    TensorClassDataset,
    hold_out,
    labelled_index,
    labelled_subset,
    strong_augment,
    unlabelled_pool,
)
from episodes.randaugment import OPS, WEAK, cutout


def dataset(classes: int = 4, per: int = 10, size: int = 8) -> TensorClassDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per, 3, size, size), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(classes * per).to(torch.uint8)  # the item's position
    return TensorClassDataset(images, torch.arange(classes).repeat(per),
                              [f"c{i}" for i in range(classes)])


def by_loop(ds: TensorClassDataset, counts: list[int], seed: int) -> torch.Tensor:
    """A second implementation: per class, the first items of one seeded shuffle."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return torch.cat([order[ds.targets[order] == c][:k] for c, k in enumerate(counts)]).sort().values


def test_labelled_index_per_class_and_fraction() -> None:
    ds = dataset()
    idx = labelled_index(ds, per_class=3, seed=5)
    assert torch.bincount(ds.targets[idx], minlength=4).tolist() == [3, 3, 3, 3]
    assert torch.equal(idx, by_loop(ds, [3] * 4, 5))
    assert torch.equal(idx, labelled_index(ds, per_class=3, seed=5))  # seeded
    assert not torch.equal(idx, labelled_index(ds, per_class=3, seed=6))
    assert torch.equal(labelled_index(ds, fraction=0.25, seed=1), by_loop(ds, [2] * 4, 1))
    sub = labelled_subset(ds, 0.25, seed=1)
    assert sub.class_sizes().tolist() == [2] * 4 and sub.class_names == ds.class_names
    assert torch.equal(sub.images[:, 0, 0, 0].long(), labelled_index(ds, fraction=0.25, seed=1))


@pytest.mark.parametrize("kwargs, message", [
    ({"per_class": 11}, "class 'c0' has only 10 images"),
    ({"per_class": 0}, ">= 1"),
    ({"fraction": 0.01}, "keeps no image of class"),
    ({"per_class": 2, "fraction": 0.5}, "one of the two"),
    ({}, "one of the two")])
def test_labelled_index_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        labelled_index(dataset(), **kwargs)


def test_hold_out_sets_images_aside_before_labels_are_chosen() -> None:
    ds = dataset()
    kept, held = hold_out(ds, 3, seed=7)
    held_pos = held.images[:, 0, 0, 0].long()
    assert torch.equal(held_pos, by_loop(ds, [3] * 4, 7))  # labelled_index's choice
    assert held.class_sizes().tolist() == [3] * 4 and kept.class_sizes().tolist() == [7] * 4
    assert held.class_names == kept.class_names == ds.class_names
    assert torch.equal(held.targets, ds.targets[held_pos])  # the same class indices
    kept_pos = kept.images[:, 0, 0, 0].long()
    assert sorted(kept_pos.tolist() + held_pos.tolist()) == list(range(40))
    assert torch.equal(kept.targets, ds.targets[kept_pos])
    # the labelled subset and the unlabelled pool of the kept images hold none of them
    idx = labelled_index(kept, per_class=2)
    pool = unlabelled_pool(kept, idx).images[:, 0, 0, 0].long()
    assert len(pool) == 20 and not torch.isin(held_pos, pool).any()
    assert not torch.isin(held_pos, kept_pos[idx]).any()
    none_kept, none = hold_out(ds, 0)
    assert len(none) == 0 and torch.equal(none_kept.images, ds.images)
    with pytest.raises(ValueError, match="class 'c0' has only 10: hold out fewer"):
        hold_out(ds, 10)
    with pytest.raises(ValueError, match=">= 0"):
        hold_out(ds, -1)


def test_unlabelled_pool_carries_no_labels() -> None:
    ds = dataset()
    idx = labelled_index(ds, per_class=2)
    extra = TensorClassDataset(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0]),
                               ["x", "y"])
    pool = unlabelled_pool(ds, idx, extra)
    rest = sorted(set(range(40)) - set(idx.tolist()))
    assert pool.class_names == ["unlabelled"] and pool.targets.eq(0).all()
    assert pool.images[:32, 0, 0, 0].tolist() == rest and len(pool) == 35
    # poisoned labels of the unlabelled part (the choice of the labelled images given): the
    # same pool
    poisoned = TensorClassDataset(ds.images, ds.targets.clone(), ds.class_names)
    poisoned.targets[rest] = (ds.targets[rest] + 1) % 4
    same = unlabelled_pool(poisoned, idx, extra)
    assert torch.equal(same.images, pool.images) and torch.equal(same.targets, pool.targets)
    with pytest.raises(ValueError, match="same size"):
        unlabelled_pool(ds, idx, TensorClassDataset(torch.zeros(1, 1, 8, 8, dtype=torch.uint8),
                                                    torch.tensor([0]), ["x"]))


def test_sampler_batches_and_resume() -> None:
    ds = dataset()
    idx = labelled_index(ds, per_class=2)
    sampler = SemiSupervisedSampler(labelled_subset(ds, per_class=2), unlabelled_pool(ds, idx),
                                    4, 3, seed=0, labelled_view=WEAK,
                                    unlabelled_views=(WEAK, StrongAugment()))
    batch = sampler.sample()
    assert batch.images.shape == (4, 3, 8, 8) and batch.labels.shape == (4,)
    assert batch.views.shape == (2, 12, 3, 8, 8) and len(batch) == 16
    assert sampler.episodes_per_batch == 16
    state = sampler.state_dict()
    a = [sampler.sample() for _ in range(3)]
    sampler.load_state_dict(state)
    b = [sampler.sample() for _ in range(3)]
    assert all(torch.equal(x.views, y.views) and torch.equal(x.labels, y.labels)
               for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="only 32 are unlabelled"):
        SemiSupervisedSampler(labelled_subset(ds, per_class=2), unlabelled_pool(ds, idx), 4, 9)


def test_randaugment_operations_by_hand() -> None:
    x = torch.tensor([0.1, 0.3, 0.5, 0.9]).view(1, 1, 2, 2).expand(1, 3, 2, 2).contiguous()
    v = torch.tensor([4.0])
    assert torch.allclose(OPS["posterize"][0](x, v) * 255,
                          torch.floor(torch.round(x * 255) / 16) * 16)
    solar = OPS["solarize"][0](x, torch.tensor([128.0]))  # 0.5*255 = 127.5 < 128: kept
    assert torch.allclose(solar.flatten()[:4], torch.tensor([0.1, 0.3, 0.5, 0.1]))
    auto = OPS["autocontrast"][0](x, v)
    assert auto.min().item() == 0.0 and auto.max().item() == pytest.approx(1.0)
    assert torch.allclose(OPS["brightness"][0](x, torch.tensor([0.5])), x * 0.5)
    assert torch.equal(OPS["identity"][0](x, v), x)
    assert torch.allclose(OPS["rotate"][0](x, torch.tensor([0.0])), x, atol=1e-6)
    cut = cutout(torch.zeros(2, 1, 8, 8), 1.0, torch.Generator().manual_seed(0))
    assert set(cut.unique().tolist()) <= {0.0, 0.5}


def test_strong_views_are_per_image_and_seeded() -> None:
    x = torch.rand(32, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    a = strong_augment(x, StrongAugment(), torch.Generator().manual_seed(1))
    b = strong_augment(x, StrongAugment(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    # the same image 32 times: different operations per image give different views
    same = strong_augment(x[:1].expand(32, -1, -1, -1).contiguous(), StrongAugment(cutout=0),
                          torch.Generator().manual_seed(2))
    assert len({tuple(v.flatten()[:20].tolist()) for v in same}) > 8
