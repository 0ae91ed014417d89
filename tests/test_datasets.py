"""Loaders on small fake trees, with every bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes import ImageFileError, image_folder, omniglot, ratio_split, stroke_characters
from episodes.omniglot import vinyals_characters


def write_tree(root: Path, classes: dict[str, int], size: int = 12, mode: str = "RGB") -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
                root / name / f"{i:03d}.png")


def write_splits(folder: Path, splits: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in splits.items():
        (folder / f"{split}.txt").write_text("\n".join(names) + "\n")
    return folder


def test_folder_with_split_files_and_cache(tmp_path):
    write_tree(tmp_path / "data", {f"c{i}": 4 for i in range(6)})
    splits = write_splits(tmp_path / "splits", {"train": ["c0", "c1", "c2"], "val": ["c3"],
                                                "test": ["c4", "c5"]})
    ds = image_folder(tmp_path / "data", "train", split_dir=splits, image_size=8,
                      cache_dir=tmp_path / "cache")
    assert ds.class_names == ["c0", "c1", "c2"] and ds.images.shape == (12, 3, 8, 8)
    assert torch.equal(ds.class_sizes(), torch.tensor([4, 4, 4]))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    again = image_folder(tmp_path / "data", "train", split_dir=splits, image_size=8,
                         cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, ds.images)
    # A changed file changes the key: the cache is rebuilt, not reused.
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "data" / "c0" / "000.png")
    changed = image_folder(tmp_path / "data", "train", split_dir=splits, image_size=8,
                           cache_dir=tmp_path / "cache")
    assert changed.images[0].sum() == 0 and not torch.equal(changed.images, ds.images)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_ratio_split_is_seeded_and_disjoint():
    names = [f"c{i:02d}" for i in range(20)]
    a, b = ratio_split(names, (0.6, 0.2, 0.2), seed=1), ratio_split(names, (0.6, 0.2, 0.2), seed=1)
    assert a == b and ratio_split(names, (0.6, 0.2, 0.2), seed=2) != a
    assert [len(a[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(a["train"] + a["val"] + a["test"]) == names


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "nope", "all")
    (tmp_path / "empty" / "classA").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no class folders with images"):
        image_folder(tmp_path / "empty", "all")


def test_split_naming_a_missing_class(tmp_path):
    write_tree(tmp_path / "data", {"a": 2, "b": 2})
    splits = write_splits(tmp_path / "s", {"train": ["a", "zebra"]})
    with pytest.raises(ValueError, match="zebra"):
        image_folder(tmp_path / "data", "train", split_dir=splits, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="split folder .* or split ratios"):
        image_folder(tmp_path / "data", "train", cache_dir=tmp_path / "c")


def test_corrupt_and_non_image_files_are_named(tmp_path):
    write_tree(tmp_path / "data", {"a": 2, "b": 2})
    (tmp_path / "data" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageFileError, match="broken.jpg"):
        image_folder(tmp_path / "data", "all", image_size=8, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.pt"))  # nothing written half
    with pytest.warns(UserWarning, match=r"skipped unreadable image\(s\) \(1\): .*broken.jpg"):
        ds = image_folder(tmp_path / "data", "all", image_size=8, cache_dir=tmp_path / "c",
                          skip_bad=True)
    assert len(ds) == 4
    (tmp_path / "data" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(ImageFileError, match="notes.txt: not an image"):
        image_folder(tmp_path / "data", "all", image_size=8, cache_dir=tmp_path / "c")


def test_grayscale_rgb_mismatch(tmp_path):
    write_tree(tmp_path / "data", {"a": 2})
    write_tree(tmp_path / "data", {"b": 2}, mode="L")
    with pytest.raises(ImageFileError, match="mode L .* expects 3"):
        image_folder(tmp_path / "data", "all", image_size=8, cache_dir=tmp_path / "c",
                     convert=False)
    with pytest.warns(UserWarning, match="converted .* 2 L"):
        ds = image_folder(tmp_path / "data", "all", image_size=8, cache_dir=tmp_path / "c")
    assert ds.image_shape == (3, 8, 8)


def test_n_larger_than_split_and_small_class(tmp_path):
    from episodes import EpisodeSampler

    write_tree(tmp_path / "data", {"a": 5, "b": 5, "c": 2})
    ds = image_folder(tmp_path / "data", "all", image_size=8, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="way=4 is larger than the 3 classes"):
        EpisodeSampler(ds, 4, 1, 1)
    with pytest.raises(ValueError, match="'c' has 2"):
        EpisodeSampler(ds, 3, 1, 2)


def make_fake_omniglot(root: Path, chars: list[str]) -> None:
    rng = np.random.default_rng(0)
    for i, char in enumerate(chars):
        folder = root / ("images_background" if i % 2 else "images_evaluation") / char
        folder.mkdir(parents=True)
        for d in range(1, 4):
            img = np.ones((105, 105), bool)
            img[rng.integers(0, 90):, 30:40] = False  # a vertical ink stroke
            Image.fromarray(img).save(folder / f"{i:04d}_{d:02d}.png")
    for a in ("images_background", "images_evaluation"):
        (root / a).mkdir(exist_ok=True)


def test_omniglot_fake_tree(tmp_path):
    chars = vinyals_characters("val")
    assert len(chars) == 172 and len(vinyals_characters("train")) == 1028
    assert len(vinyals_characters("test")) == 423
    make_fake_omniglot(tmp_path / "omniglot-py", chars)
    ds = omniglot(tmp_path, "val", cache_dir=tmp_path / "c")
    assert ds.num_classes == 4 * 172 and ds.image_shape == (1, 28, 28) and len(ds) == 3 * 4 * 172
    assert ds.class_names[:2] == [f"{chars[0]}/rot000", f"{chars[0]}/rot090"]
    # ink is 255 on a paper of 0; rotations are exact
    img = ds.images[ds.targets == 0][0, 0]
    assert img.max() == 255 and img[:, :5].max() == 0
    rot = ds.images[ds.targets == 1][0, 0]
    assert torch.equal(rot, torch.rot90(img, 1))


def test_omniglot_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        omniglot(tmp_path, "val")
    make_fake_omniglot(tmp_path, vinyals_characters("val")[:5])
    with pytest.raises(FileNotFoundError, match="is missing"):
        omniglot(tmp_path, "val", cache_dir=tmp_path / "c")


def test_embedded_dataset():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        test = stroke_characters("test")
    assert test.num_classes == 200 and len(test) == 200 * 20 and test.image_shape == (1, 28, 28)
    train = stroke_characters("train")
    assert train.num_classes == 900 and torch.equal(train.class_sizes(), torch.full((900,), 20))
    assert set(train.class_names).isdisjoint(test.class_names)
    assert 0 < float(train.images.float().mean()) < 128
    assert torch.equal(stroke_characters("train").images, train.images)  # cached
    from episodes.synthetic import generate
    a, ta = generate(seed=3, num_classes=30)
    b, _ = generate(seed=3, num_classes=30)
    c, _ = generate(seed=4, num_classes=30)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (600, 1, 28, 28) and torch.equal(ta, torch.arange(30).repeat_interleave(20))


def test_area_resize_is_exact_area_averaging():
    from episodes.images import area_resize, area_weights

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (12, 9, 3)).astype(np.uint8)
    # integer factors: plain block means
    assert np.abs(area_resize(a, (4, 3)).astype(float) - a.reshape(4, 3, 3, 3, 3).mean((1, 3))).max() <= 0.5
    # 3 -> 2: output pixel 0 covers input [0, 1.5): weights 2/3, 1/3
    assert np.allclose(area_weights(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
