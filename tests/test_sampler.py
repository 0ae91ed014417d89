"""Sampler invariants and fixed episodes."""

from __future__ import annotations

import pytest
import torch

from episodes import EpisodeSampler, FixedEpisodes


def decode(ep, dataset):
    """Recover (class index, item index) from the pixels the tiny dataset writes."""
    cls = (ep.support_x[..., 0, 0, 0] * 255).round().long(), (ep.query_x[..., 0, 0, 0] * 255).round().long()
    item = (ep.support_x[..., 0, 0, 1] * 255).round().long(), (ep.query_x[..., 0, 0, 1] * 255).round().long()
    return cls, item


def test_shapes_labels_and_invariants(tiny_dataset):
    ds = tiny_dataset(12, 8)
    sampler = EpisodeSampler(ds, n_way=5, k_shot=2, q_query=3, episodes_per_batch=4, num_batches=6,
                             seed=1)
    batches = list(sampler)
    assert len(batches) == 6
    for ep in batches:
        assert ep.support_x.shape == (4, 10, 1, 8, 8) and ep.query_x.shape == (4, 15, 1, 8, 8)
        assert ep.support_y.shape == (4, 10) and ep.query_y.shape == (4, 15)
        assert (ep.n_way, ep.k_shot, ep.q_query, len(ep)) == (5, 2, 3, 4)
        assert ep.support_x.dtype == torch.float32 and float(ep.support_x.max()) <= 1.0
        assert ep.support_y.min() == 0 and ep.support_y.max() == 4
        assert torch.equal(torch.bincount(ep.query_y[0], minlength=5), torch.full((5,), 3))
        (s_cls, q_cls), (s_item, q_item) = decode(ep, ds)
        for t in range(4):
            # distinct classes, labels map to the episode's classes
            assert len(set(ep.classes[t].tolist())) == 5
            assert torch.equal(s_cls[t], ep.classes[t][ep.support_y[t]])
            assert torch.equal(q_cls[t], ep.classes[t][ep.query_y[t]])
            # support and query disjoint, no item twice
            items = torch.cat([s_item[t], q_item[t]]).tolist()
            assert len(set(items)) == len(items)


def test_classes_only_from_the_split(tiny_dataset):
    full = tiny_dataset(12, 8)
    split = full.subset_classes(["class03", "class05", "class07", "class11"])
    ep = EpisodeSampler(split, 3, 1, 2, episodes_per_batch=50, seed=0).sample()
    seen = set((ep.query_x[..., 0, 0, 0] * 255).round().long().flatten().tolist())
    assert seen <= {3, 5, 7, 11} and len(seen) == 4


def test_determinism_and_state(tiny_dataset):
    ds = tiny_dataset()
    a = EpisodeSampler(ds, 5, 1, 2, episodes_per_batch=3, seed=7)
    b = EpisodeSampler(ds, 5, 1, 2, episodes_per_batch=3, seed=7)
    c = EpisodeSampler(ds, 5, 1, 2, episodes_per_batch=3, seed=8)
    ea, eb, ec = a.sample(), b.sample(), c.sample()
    assert torch.equal(ea.query_x, eb.query_x) and not torch.equal(ea.query_x, ec.query_x)
    state = a.state_dict()
    nxt = a.sample()
    b2 = EpisodeSampler(ds, 5, 1, 2, episodes_per_batch=3, seed=0)
    b2.load_state_dict(state)
    assert torch.equal(b2.sample().support_x, nxt.support_x)


def test_uniform_class_coverage(tiny_dataset):
    ds = tiny_dataset(12, 8)
    ep = EpisodeSampler(ds, 3, 1, 1, episodes_per_batch=4000, seed=0).sample()
    counts = torch.bincount(ep.classes.flatten(), minlength=12).float()
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()


def test_bad_shapes_have_clear_errors(tiny_dataset):
    ds = tiny_dataset(6, 5)
    with pytest.raises(ValueError, match="way=7 is larger than the 6 classes"):
        EpisodeSampler(ds, 7, 1, 1)
    with pytest.raises(ValueError, match="fewer than shot\\+query=6 images.*'class00' has 5"):
        EpisodeSampler(ds, 5, 3, 3)
    with pytest.raises(ValueError, match="fewer than shot\\+query"):
        FixedEpisodes.generate(ds, 5, 3, 3)


def test_uneven_class_sizes(tiny_dataset):
    from episodes import TensorClassDataset

    ds = tiny_dataset(4, 8)
    keep = torch.tensor([i for i in range(32) if not (8 <= i < 13)])  # class 1 keeps 3 items
    small = TensorClassDataset(ds.images[keep], ds.targets[keep], ds.class_names)
    ep = EpisodeSampler(small, 4, 1, 2, episodes_per_batch=200, seed=0).sample()
    items = (torch.cat([ep.support_x, ep.query_x], 1)[..., 0, 0, 1] * 255).round().long()
    assert set(items.flatten().tolist()) <= set(keep.tolist())


def test_fixed_episodes_roundtrip(tiny_dataset, tmp_path):
    ds = tiny_dataset()
    fe = FixedEpisodes.generate(ds, 4, 2, 3, num_episodes=25, seed=3)
    assert (fe.n_way, fe.k_shot, fe.q_query, len(fe)) == (4, 2, 3, 25)
    fe.save(tmp_path / "eps.pt")
    back = FixedEpisodes.load(tmp_path / "eps.pt")
    a = list(fe.batches(ds, batch_size=10))
    b = list(back.batches(ds, batch_size=7))
    assert torch.equal(torch.cat([e.query_x for e in a]), torch.cat([e.query_x for e in b]))
    assert torch.equal(FixedEpisodes.generate(ds, 4, 2, 3, 25, seed=3).items, fe.items)
    other = tiny_dataset(13, 8)
    with pytest.raises(ValueError, match="different dataset"):
        next(fe.batches(other))


def test_way_and_shot_may_differ_between_training_and_evaluation(tiny_dataset):
    ds = tiny_dataset()
    train_ep = EpisodeSampler(ds, 10, 1, 2).sample()
    eval_ep = next(FixedEpisodes.generate(ds, 3, 5, 1, 4).batches(ds))
    assert (train_ep.n_way, train_ep.k_shot) == (10, 1) and (eval_ep.n_way, eval_ep.k_shot) == (3, 5)


def test_fixed_episodes_file_holds_only_the_episodes(tiny_dataset, tmp_path):
    """The saved file holds the [E, N] classes and [E, N, K+Q] items, not the storage of the
    [E, C] tensor the classes were cut from."""
    episodes = FixedEpisodes.generate(tiny_dataset(num_classes=200, per_class=4), 2, 1, 1, 500, seed=0)
    episodes.save(tmp_path / "e.pt")
    index_bytes = 8 * (episodes.classes.numel() + episodes.items.numel())
    assert (tmp_path / "e.pt").stat().st_size < index_bytes + 4096
