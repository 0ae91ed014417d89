"""Bad image files: each ends in one line naming the file and the fix, or (skip_bad) in a warning
naming what was skipped, never in a traceback or a silently wrong image."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from episodes import ImageFileError, decode_image, image_folder

from .test_datasets import write_tree


def load(root: Path, **kw) -> object:
    return image_folder(root, "all", image_size=8, channels=1, decoder="threads",
                        cache_dir=root.parent / "cache", **kw)


@pytest.fixture
def small_bomb_limit(monkeypatch):
    """PIL's decompression-bomb limit lowered to 1000 pixels: 40x40 is in PIL's warning band
    (over the limit), 50x50 in its error band (over twice the limit)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


@pytest.mark.parametrize("side", [40, 50])
def test_decompression_bomb_is_refused_or_skipped(tmp_path, small_bomb_limit, side):
    write_tree(tmp_path / "data", {"a": 2, "b": 2}, size=20, mode="L")
    bomb = tmp_path / "data" / "a" / "bomb.png"
    Image.new("L", (side, side)).save(bomb)
    with pytest.raises(ImageFileError, match=r"bomb\.png.*decompression.bomb.*skip") as e, \
            warnings.catch_warnings():  # PIL's own warning, from one file decoded alone
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        decode_image(bomb, 1, 8)
    assert "\n" not in str(e.value)
    with pytest.raises(ImageFileError, match=r"bomb\.png"):
        load(tmp_path / "data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(tmp_path / "data", skip_bad=True)
    assert len(ds) == 4
    assert [str(w.message) for w in caught if "bomb.png" in str(w.message)]
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    img, mode = decode_image(tmp_path / "deep.png", 1, None)
    assert mode == "I;16"
    want = np.rint(values * (255 / 65535)).astype(np.uint8)
    assert np.array_equal(img[0].numpy(), want)  # PIL's convert("L") makes it all 255
    rgb, _ = decode_image(tmp_path / "deep.png", 3, None)
    assert torch.equal(rgb, img.expand(3, -1, -1))


def test_skipped_files_and_empty_class_folders_are_named(tmp_path):
    write_tree(tmp_path / "data", {"a": 2, "b": 2, "c": 2}, mode="L")
    (tmp_path / "data" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "empty").mkdir()
    (tmp_path / "data" / "only_text").mkdir()
    (tmp_path / "data" / "only_text" / "readme.md").write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(tmp_path / "data", skip_bad=True)
    text = [str(w.message) for w in caught]
    assert any("skipped non-image file(s)" in t and "notes.txt" in t and "readme.md" in t
               for t in text)
    assert any("with no image files" in t and "empty" in t and "only_text" in t for t in text)
    assert ds.class_names == ["a", "b", "c"]
    with pytest.warns(UserWarning, match=r"with no image files.*\(1\): empty"):
        (tmp_path / "data" / "a" / "notes.txt").unlink()
        (tmp_path / "data" / "only_text" / "readme.md").rename(
            tmp_path / "data" / "only_text" / "x.png")
        with pytest.raises(ImageFileError, match=r"x\.png: cannot decode"):
            load(tmp_path / "data")
