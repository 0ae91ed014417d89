"""Readable objects: datasets, samplers, fixed episodes and episodes print what they are (never
whole tensors); fixed episodes slice and index."""

import pytest
import torch

from episodes import EpisodeSampler, FixedEpisodes, ImageBatchSampler, TensorClassDataset


@pytest.fixture
def test_ds(tiny_dataset):
    """200 classes of 20 images 1x28x28, called 'embedded' test."""
    ds = tiny_dataset(num_classes=200, per_class=20, size=28)
    return TensorClassDataset(ds.images, ds.targets, ds.class_names, name="embedded",
                              split="test")


def test_a_dataset_and_its_samplers_print_their_settings(test_ds):
    text = repr(test_ds)
    assert text == "TensorClassDataset('embedded' test: 200 classes, 4000 images of 1x28x28, on cpu)"
    assert repr(test_ds.subset_classes(test_ds.class_names[:3])).startswith(
        "TensorClassDataset('embedded' test: 3 classes, 60 images")
    sampler = EpisodeSampler(test_ds, 5, 1, 15, episodes_per_batch=4, num_batches=10, seed=7)
    assert repr(sampler).startswith("EpisodeSampler(5-way 1-shot 15-query, 4 episodes per batch, "
                                    "10 batches, seed 7, 0 drawn, TensorClassDataset(")
    assert repr(ImageBatchSampler(test_ds, 32, seed=2)).startswith(
        "ImageBatchSampler(batch size 32, seed 2, TensorClassDataset(")
    episode = sampler.sample()
    assert repr(episode) == ("Episode(4 episodes, 5-way 1-shot 15-query: support_x=float32[4, 5, 1, "
                             "28, 28], support_y=int64[4, 5], query_x=float32[4, 75, 1, 28, 28], "
                             "query_y=int64[4, 75], classes=int64[4, 5])")


def test_fixed_episodes_slice_index_and_print(test_ds, tmp_path):
    episodes = FixedEpisodes.generate(test_ds, 5, 1, 15, num_episodes=30, seed=3)
    assert repr(episodes).startswith("FixedEpisodes(30 episodes, 5-way 1-shot 15-query, seed 3, "
                                     f"fingerprint {episodes.fingerprint}, TensorClassDataset(")
    first = episodes[:10]
    assert isinstance(first, FixedEpisodes) and len(first) == 10 and first.k_shot == 1
    torch.testing.assert_close(first.items, episodes.items[:10])
    batch = next(episodes.batches(test_ds, batch_size=30))
    one = episodes[-1]
    assert not one.is_batch and one.support_x.shape == (5, 1, 28, 28)
    for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
        torch.testing.assert_close(getattr(one, name), getattr(batch, name)[29])
    assert one.as_batch().support_x.shape == (1, 5, 1, 28, 28)
    with pytest.raises(IndexError):
        episodes[30]
    episodes.save(tmp_path / "e.pt")
    loaded = FixedEpisodes.load(tmp_path / "e.pt")
    assert loaded.seed == 3 and loaded.fingerprint == episodes.fingerprint
    torch.testing.assert_close(loaded.items, episodes.items)
    with pytest.raises(ValueError, match="do not know their dataset"):
        loaded[0]
    torch.testing.assert_close(FixedEpisodes.load(tmp_path / "e.pt", test_ds)[29].query_x,
                               one.query_x)
