"""Datasets by name, as the command line and the benchmarks ask for them.

Every loader takes ``(root, split, image_size, **options)`` and returns a
:class:`~episodes.dataset.TensorClassDataset` of that split's classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .dataset import TensorClassDataset
from .folder import image_folder, unlabelled_folder
from .natural import cub, mini_imagenet, stanford_dogs
from .omniglot import omniglot
from .synthetic import stroke_characters

Loader = Callable[..., TensorClassDataset]


def _embedded(root: str | os.PathLike | None, split: str, image_size: int | None, **kw: Any
              ) -> TensorClassDataset:
    return stroke_characters(split, cache_dir=kw.get("cache_dir"), image_size=image_size or 28)


def _omniglot(root: str | os.PathLike | None, split: str, image_size: int | None, **kw: Any
              ) -> TensorClassDataset:
    if root is None:
        raise ValueError("the omniglot dataset needs a folder (--root)")
    return omniglot(root, split, download=kw.get("download", False), image_size=image_size or 28,
                    cache_dir=kw.get("cache_dir"))


def _folder(root: str | os.PathLike | None, split: str, image_size: int | None, **kw: Any
            ) -> TensorClassDataset:
    if root is None:
        raise ValueError("the folder dataset needs a folder of class folders (--root)")
    return image_folder(root, split, split_dir=kw.get("split_dir"), ratios=kw.get("ratios"),
                        seed=kw.get("split_seed", 0), image_size=image_size or 84,
                        channels=kw.get("channels", 3), cache_dir=kw.get("cache_dir"),
                        convert=kw.get("convert", True), skip_bad=kw.get("skip_bad", False),
                        decoder=kw.get("decoder", "auto"))


def _unlabelled(root: str | os.PathLike | None, split: str, image_size: int | None, **kw: Any
                ) -> TensorClassDataset:
    if root is None:
        raise ValueError("the unlabelled dataset needs a folder of images (--root)")
    return unlabelled_folder(root, split, image_size=image_size or 84,
                             channels=kw.get("channels", 3), cache_dir=kw.get("cache_dir"),
                             convert=kw.get("convert", True), skip_bad=kw.get("skip_bad", False),
                             decoder=kw.get("decoder", "auto"))


def _natural(loader: Loader, name: str, options: tuple[str, ...] = ()) -> Loader:
    """A registry loader for a natural-image dataset (default 84x84) that needs ``root`` and
    passes on the common options plus its own ``options``."""
    def load(root: str | os.PathLike | None, split: str, image_size: int | None, **kw: Any
             ) -> TensorClassDataset:
        if root is None:
            raise ValueError(f"the {name} dataset needs its folder (--root)")
        common = {k: kw[k] for k in ("cache_dir", "convert", "skip_bad", "decoder") if k in kw}
        extra = {k: kw[k] for k in options if k in kw}
        return loader(root, split, image_size=image_size or 84, **common, **extra)
    return load


DATASETS: dict[str, Loader] = {
    "embedded": _embedded, "omniglot": _omniglot, "folder": _folder, "unlabelled": _unlabelled,
    "dogs": _natural(stanford_dogs, "Stanford Dogs", ("crop", "split_dir")),
    "cub": _natural(cub, "CUB-200-2011"),
    "miniimagenet": _natural(mini_imagenet, "mini-ImageNet", ("csv_dir", "split_dir")),
}


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None,
                 image_size: int | None = None, **options: Any) -> TensorClassDataset:
    """Load split ``split`` of dataset ``name`` (see ``DATASETS``) from ``root``.

    ``image_size`` None means the dataset's usual size (28 for the character datasets, 84 for
    natural images). Options: ``cache_dir``, ``download``, ``split_dir``, ``ratios``,
    ``split_seed``, ``channels``, ``convert``, ``skip_bad``, ``decoder`` ("auto", "cuda",
    "threads", "processes"), ``crop`` (dogs: bounding-box crops), ``csv_dir`` (miniimagenet);
    each loader reads those it uses.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {sorted(DATASETS)}")
    return DATASETS[name](root, split, image_size, **options)
