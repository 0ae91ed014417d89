"""Omniglot (Lake et al. 2015) with the class split of Vinyals et al. 2016.

Reads the official layout ``root/images_background/<Alphabet>/<characterNN>/*.png`` and
``root/images_evaluation/...`` (also under ``root/omniglot-py/``, where torchvision puts it). Each
character of the split is used in four rotations (0, 90, 180, 270 degrees) as four classes named
``Alphabet/characterNN/rotDDD``. Images are resized by exact area averaging to 28x28 and inverted so
that ink is 1 (255) and paper 0: the pipeline ``ImagePipeline(1, 28, "area", invert=True)``,
recorded on the dataset. A raw Omniglot PNG read through that pipeline is the ``rot000`` image.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch

from .dataset import TensorClassDataset
from .folder import SPLITS, cached_class_dataset, read_split_file
from .pipeline import ImagePipeline

URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
ARCHIVES = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
            "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
ROTATIONS = (0, 90, 180, 270)


def vinyals_characters(split: str) -> list[str]:
    """``Alphabet/characterNN`` of each character of a Vinyals split ("train", "val", "test",
    or "trainval")."""
    if split == "trainval":
        return vinyals_characters("train") + vinyals_characters("val")
    if split not in SPLITS:
        raise ValueError(f"Omniglot split must be one of {SPLITS} or 'trainval', got {split!r}")
    path = resources.files("episodes") / "splits" / "omniglot_vinyals" / f"{split}.txt"
    with resources.as_file(path) as p:
        return read_split_file(p)


def find_omniglot_root(root: str | os.PathLike) -> Path | None:
    """The folder holding ``images_background`` and ``images_evaluation``, or None."""
    for candidate in (Path(root), Path(root) / "omniglot-py"):
        if all((candidate / a).is_dir() for a in ARCHIVES):
            return candidate
    return None


def download_omniglot(root: str | os.PathLike) -> Path:
    """Download and extract the two official archives into ``root`` (checked by MD5).

    Each archive is fetched and extracted in a temporary folder inside ``root`` and moved into
    place only when whole; a failure (no network, a corrupt archive) leaves nothing behind, not
    even ``root`` if this call created it, and raises ``FileNotFoundError`` in one line.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    root = Path(root)
    created = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    for archive, md5 in ARCHIVES.items():
        if (root / archive).is_dir():
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive}-", dir=root))
        try:
            download_and_extract_archive(f"{URL}/{archive}.zip", str(tmp), md5=md5)
            os.replace(tmp / archive, root / archive)
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, bad MD5, bad zip, full disk
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            shutil.rmtree(tmp, ignore_errors=True)
            for p in created:  # deepest first: only the folders this call made, if still empty
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            raise FileNotFoundError(
                f"could not download Omniglot's {archive}.zip from {URL} ({why}): check the "
                f"network connection, or download images_background.zip and "
                f"images_evaluation.zip yourself and extract both into {root}") from e
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def omniglot(root: str | os.PathLike, split: str = "train", download: bool = False,
             image_size: int = 28, cache_dir: str | os.PathLike | None = None
             ) -> TensorClassDataset:
    """One Vinyals split of Omniglot, rotations as classes, as an in-memory dataset.

    Returns:
        A dataset of ``4 * characters`` classes (train 4112, val 688, test 1692) with uint8 images
        ``[1, image_size, image_size]``, 20 per class.
    """
    base = find_omniglot_root(root)
    if base is None:
        if not download:
            raise FileNotFoundError(
                f"Omniglot not found under {root}: expected {root}/images_background and "
                f"{root}/images_evaluation (the official layout); pass download=True (--download)"
                f" to fetch it")
        base = download_omniglot(root)
    files = {}
    for char in vinyals_characters(split):
        folders = [base / a / char for a in ARCHIVES if (base / a / char).is_dir()]
        if not folders:
            raise FileNotFoundError(f"Omniglot character folder {char} is missing under {base}: "
                                    f"the copy is incomplete; re-download it (--download)")
        files[char] = sorted(folders[0].glob("*.png"))
    pipeline = ImagePipeline(1, image_size, "area", invert=True)
    chars = cached_class_dataset(files, base, pipeline, name=f"omniglot-{split}",
                                 cache_dir=cache_dir)
    chars.name, chars.split = "omniglot", split
    return with_rotations(chars)


def with_rotations(chars: TensorClassDataset) -> TensorClassDataset:
    """Each class in four rotations as four classes ``<name>/rot000`` ... ``<name>/rot270``
    (images ``[M, C, H, W]`` become ``[4 * M, C, H, W]``, each image followed by its rotations);
    the pipeline is kept: it makes the ``rot000`` images from files."""
    images = chars.images
    rotated = torch.stack([torch.rot90(images, k, dims=(2, 3)) for k in range(4)], dim=1)
    targets = (chars.targets.unsqueeze(1) * 4 + torch.arange(4)).reshape(-1)
    names = [f"{n}/rot{r:03d}" for n in chars.class_names for r in ROTATIONS]
    return TensorClassDataset(rotated.reshape(-1, *images.shape[1:]), targets, names,
                              chars.pipeline, name=chars.name, split=chars.split)
