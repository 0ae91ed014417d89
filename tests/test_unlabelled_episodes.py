"""Episodes with unlabelled images (episodes.unlabelled): shapes, disjointness, the label split,
fixed episodes on disk, and that no method can see the unlabelled images' classes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from episodes import Episode, EpisodeSampler, FixedEpisodes, labelled_index
from episodes.sampler import gather_episode
from episodes.unlabelled import label_split, sample_with_unlabelled, unlabelled_tables
from fewshot.registry import build_learner, make_spec


def draw(ds, n=3, per_class=3, m=2, d=2, t=20, ratio=None, seed=0):
    tables = unlabelled_tables(ds.targets, ds.num_classes, ratio, 0)
    return sample_with_unlabelled(tables, n, per_class, m, d, t, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ratio", [None, 0.5])
def test_unlabelled_items_are_other_images_of_the_episode_and_distractor_classes(tiny_dataset, ratio):
    ds = tiny_dataset()
    classes, items, unlabelled = draw(ds, ratio=ratio)
    assert classes.shape == (20, 3) and items.shape == (20, 3, 3) and unlabelled.shape == (20, 10)
    targets = ds.targets
    for e in range(20):
        labelled = set(items[e].flatten().tolist())
        assert len(labelled) == 9 and not labelled & set(unlabelled[e].tolist())
        assert len(set(unlabelled[e].tolist())) == 10
        assert (targets[items[e]] == classes[e].unsqueeze(1)).all()
        counts = torch.bincount(targets[unlabelled[e]], minlength=ds.num_classes)
        assert (counts[classes[e]] == 2).all()  # M of each episode class
        others = torch.nonzero(counts).squeeze(1).tolist()
        distractors = set(others) - set(classes[e].tolist())
        assert len(distractors) == 2 and (counts[list(distractors)] == 2).all()
    # shuffled: the unlabelled images are not in class order in every episode
    assert not all((targets[unlabelled[e]].diff() >= 0).all() for e in range(20))


def test_label_split_is_seeded_per_class_and_respected(tiny_dataset):
    ds = tiny_dataset(per_class=10)
    split = label_split(ds.targets, ds.num_classes, 0.4, seed=3)
    assert (torch.bincount(ds.targets[split], minlength=12) == 4).all()
    assert torch.equal(split, label_split(ds.targets, ds.num_classes, 0.4, seed=3))
    assert not torch.equal(split, label_split(ds.targets, ds.num_classes, 0.4, seed=4))
    tables = unlabelled_tables(ds.targets, ds.num_classes, 0.4, 3)
    _, items, unlabelled = sample_with_unlabelled(tables, 3, 3, 2, 1, 30,
                                                  torch.Generator().manual_seed(0))
    assert split[items].all() and not split[unlabelled].any()


def test_label_ratio_and_label_fraction_choose_the_same_images(tiny_dataset):
    """A meta-trained refinement (--label-ratio) and a model trained on the labelled images
    alone (--label-fraction) see the same labels when count and seed agree."""
    ds = tiny_dataset(per_class=10)
    for ratio, seed in ((0.4, 3), (0.1, 0), (1.0, 7)):
        split = label_split(ds.targets, ds.num_classes, ratio, seed)
        index = labelled_index(ds, fraction=ratio, seed=seed)
        assert torch.equal(torch.nonzero(split).squeeze(1), index)


def test_sampler_episodes_carry_the_images_and_the_plain_stream_is_unchanged(tiny_dataset):
    ds = tiny_dataset()
    ep = EpisodeSampler(ds, 3, 1, 2, episodes_per_batch=4, unlabelled_per_class=2,
                        distractor_classes=1, seed=5).sample()
    assert ep.unlabelled_x.shape == (4, 8, 1, 8, 8) and ep.unlabelled_x.dtype == torch.float32
    assert {f.name for f in dataclasses.fields(Episode)} == {
        "support_x", "support_y", "query_x", "query_y", "classes", "unlabelled_x"}
    assert ep.slice(slice(1, 3)).unlabelled_x.shape[0] == 2 and ep.to("cpu").unlabelled_x is not None
    # the pixel (0, 1) encodes the item: unlabelled images are none of the support/query images
    item = lambda x: set((x[..., 0, 0, 1] * 255).round().long().flatten().tolist())  # noqa: E731
    for e in range(4):
        assert not item(ep.unlabelled_x[e]) & (item(ep.support_x[e]) | item(ep.query_x[e]))
    plain, old = EpisodeSampler(ds, 3, 1, 2, seed=5).sample(), EpisodeSampler(ds, 3, 1, 2, seed=5)
    assert plain.unlabelled_x is None
    assert torch.equal(plain.support_x, old.sample().support_x)


def test_shape_errors_name_the_fix(tiny_dataset):
    ds = tiny_dataset()
    with pytest.raises(ValueError, match="lower distractor_classes"):
        EpisodeSampler(ds, 5, 1, 1, unlabelled_per_class=1, distractor_classes=8)
    with pytest.raises(ValueError, match="fewer than shot\\+query\\+unlabelled=9"):
        EpisodeSampler(ds, 3, 2, 2, unlabelled_per_class=5)
    with pytest.raises(ValueError, match="labelled images"):
        EpisodeSampler(ds, 3, 2, 2, unlabelled_per_class=1, label_ratio=0.4)
    with pytest.raises(ValueError, match="--unlabelled"):
        FixedEpisodes.generate(ds, 3, 1, 1, 4, unlabelled_per_class=3, label_ratio=0.75)


def test_fixed_episodes_save_load_and_old_files(tiny_dataset, tmp_path):
    ds = tiny_dataset()
    fixed = FixedEpisodes.generate(ds, 3, 1, 2, 6, seed=1, unlabelled_per_class=2,
                                   distractor_classes=1, label_ratio=0.5, label_seed=2)
    assert fixed.unlabelled.shape == (6, 8)
    assert fixed.unlabelled_drawn == {"unlabelled_per_class": 2, "distractor_classes": 1,
                                      "label_ratio": 0.5, "label_seed": 2}
    fixed.save(tmp_path / "e.pt")
    back = FixedEpisodes.load(tmp_path / "e.pt")
    assert torch.equal(back.unlabelled, fixed.unlabelled) and back.unlabelled_drawn == fixed.unlabelled_drawn
    batches = list(back.batches(ds, batch_size=4))
    assert [b.unlabelled_x.shape[0] for b in batches] == [4, 2]
    # a file written without unlabelled images (the keys the format had before) loads with none
    plain = FixedEpisodes.generate(ds, 3, 1, 2, 6, seed=1)
    torch.save({"classes": plain.classes, "items": plain.items, "k_shot": 1,
                "fingerprint": plain.fingerprint}, tmp_path / "old.pt")
    old = FixedEpisodes.load(tmp_path / "old.pt")
    assert old.unlabelled is None and old.unlabelled_drawn is None
    assert next(old.batches(ds)).unlabelled_x is None


def test_the_unlabelled_images_classes_never_reach_the_learner(tiny_dataset):
    """Poison the dataset's labels of the unlabelled images: the episode a learner receives and
    the logits it gives are unchanged (their classes are not part of an episode)."""
    ds = tiny_dataset(size=16)
    fixed = FixedEpisodes.generate(ds, 3, 1, 2, 4, unlabelled_per_class=2, distractor_classes=1)
    torch.manual_seed(0)
    learner = build_learner(make_spec("protonet", "conv4", 1, 16, {"refine": "soft-kmeans"}))
    ep = gather_episode(ds, fixed.classes, fixed.items, 1, unlabelled=fixed.unlabelled)
    ds.targets[fixed.unlabelled.flatten()] = (ds.targets[fixed.unlabelled.flatten()] + 5) % 12
    poisoned = gather_episode(ds, fixed.classes, fixed.items, 1, unlabelled=fixed.unlabelled)
    for f in dataclasses.fields(Episode):
        assert torch.equal(getattr(ep, f.name), getattr(poisoned, f.name))
    torch.testing.assert_close(learner.batch_logits(ep)[0], learner.batch_logits(poisoned)[0])
    # nor does their order: shuffled, the same logits (up to rounding)
    shuffled = dataclasses.replace(ep, unlabelled_x=ep.unlabelled_x[:, torch.randperm(8)])
    torch.testing.assert_close(learner.batch_logits(ep)[0], learner.batch_logits(shuffled)[0])
