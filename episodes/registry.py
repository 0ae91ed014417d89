"""Registries by name: the one shape every pluggable part has (datasets here; the methods and
heads of ``fewshot`` use the same :class:`Registry`).

An entry knows everything about its part: its name, its typed options (a dataclass, checked when
parsed: :mod:`episodes.options`), the function that builds it, its kind and a one-line summary
(help texts and tables are generated from them). A separately installed package adds entries
through the entry-point group of the registry (e.g. ``fewshot.datasets``): its module, loaded the
first time a name is looked up, registers them on import; nothing in this package names it.

Datasets: every loader takes ``(root, split, image_size, options)`` and returns a
:class:`~episodes.dataset.TensorClassDataset` of that split's classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from importlib import import_module, metadata
from typing import Any, ClassVar, Literal

from .dataset import TensorClassDataset
from .folder import image_folder, unlabelled_folder
from .natural import cub, mini_imagenet, stanford_dogs
from .omniglot import omniglot
from .options import check, parse_config
from .synthetic import stroke_characters


@dataclass(frozen=True)
class Entry:
    """A registered part: ``name``, its options dataclass ``config``, ``build`` (what builds it
    from its options), its ``kind`` and a one-line ``summary``."""

    name: str
    config: type
    build: Callable[..., Any]
    kind: str = ""
    summary: str = ""


class Registry:
    """Entries by name, filled by :meth:`register`, by the modules ``builtin`` (names of the
    modules of the built-in entries) and by those of the entry-point group ``group`` (both loaded
    on the first lookup, so that a light import of the package does not load every entry).
    ``what`` names the part in errors ("method")."""

    def __init__(self, what: str, group: str, builtin: tuple[str, ...] = ()) -> None:
        self.what, self.group, self.builtin = what, group, builtin
        self.entries: dict[str, Entry] = {}
        self._plugins_loaded = False

    def register(self, name: str, config: type, kind: str = "", summary: str = "") -> Callable:
        """Decorator registering ``build`` under ``name`` with options dataclass ``config``."""
        def wrap(build: Callable) -> Callable:
            self.entries[name] = Entry(name, config, build, kind, summary)
            return build
        return wrap

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for module in self.builtin:  # by name, as the plugins: they register on import
            import_module(module)
        for ep in metadata.entry_points(group=self.group):
            ep.load()  # the module registers its entries on import

    def names(self, kind: str | None = None) -> list[str]:
        """The registered names (of ``kind``): the built-in ones in the order of ``builtin`` (and
        of registration within a module), whatever order they were imported in, then the others
        in registration order."""
        self._load_plugins()

        def rank(name: str) -> int:
            module = getattr(self.entries[name].build, "__module__", "") or ""
            return next((i for i, m in enumerate(self.builtin)
                         if module == m or module.startswith(m + ".")), len(self.builtin))
        return sorted((n for n, e in self.entries.items() if kind is None or e.kind == kind),
                      key=rank)

    def get(self, name: str) -> Entry:
        """The entry ``name``, or a ValueError listing the registered names."""
        self._load_plugins()
        if name not in self.entries:
            raise ValueError(f"unknown {self.what} {name!r}: choose one of "
                             f"{', '.join(self.names())}")
        return self.entries[name]

    def config(self, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """The typed options of ``name`` from ``options`` (text values converted and checked)."""
        return parse_config(self.get(name).config, options or {}, f"{self.what} {name}")

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DATASETS = Registry("dataset", "fewshot.datasets")
Decoder = Literal["auto", "cuda", "threads", "processes"]


@dataclass
class CachedOptions:
    """Options of every dataset: ``cache_dir`` (default ``$FEWSHOT_CACHE``, else
    ``~/.cache/fewshot``) where decoded images are kept. ``NEEDS_ROOT``: whether the dataset
    is read from a folder (``root``)."""

    NEEDS_ROOT: ClassVar[bool] = True
    cache_dir: str | None = None


@dataclass
class EmbeddedOptions(CachedOptions):
    """The embedded dataset is generated, not read from a folder."""

    NEEDS_ROOT: ClassVar[bool] = False


@dataclass
class OmniglotOptions(CachedOptions):
    """``download``: fetch the official archives into ``root`` when missing."""

    download: bool = False


@dataclass
class DecodedOptions(CachedOptions):
    """Datasets of image files: ``convert`` images of other channels (else refuse them),
    ``skip_bad`` unreadable files (with a warning), ``decoder`` (auto: GPU JPEG decoding when
    CUDA is present, else CPU threads)."""

    convert: bool = True
    skip_bad: bool = False
    decoder: Decoder = "auto"


@dataclass
class UnlabelledOptions(DecodedOptions):
    """``channels``: 1 (grayscale) or 3 (RGB)."""

    channels: int = 3

    def __post_init__(self) -> None:
        check(self.channels in (1, 3), "channels", "1 or 3", self.channels)


@dataclass
class FolderOptions(UnlabelledOptions):
    """Classes split by ``split_dir`` (``train.txt``/``val.txt``/``test.txt``) or by ``ratios``
    (train, val, test) after a shuffle seeded by ``split_seed``."""

    split_dir: str | None = None
    ratios: tuple[float, float, float] | None = None
    split_seed: int = 0


@dataclass
class DogsOptions(DecodedOptions):
    """``crop``: each image cropped to its bounding box (``Annotation/``); ``split_dir``: another
    breed split (default: the packaged 70/20/30)."""

    crop: bool = False
    split_dir: str | None = None


@dataclass
class MiniOptions(DecodedOptions):
    """``csv_dir``: Ravi's ``train.csv``/``val.csv``/``test.csv``; ``split_dir``: class-id
    files."""

    csv_dir: str | None = None
    split_dir: str | None = None


def _needs_root(root: str | os.PathLike | None, name: str, what: str = "its folder") -> None:
    if root is None:
        raise ValueError(f"the {name} dataset needs {what} (--root)")


@DATASETS.register("embedded", EmbeddedOptions, "characters",
                   "generated stroke characters, 1200 classes, shipped with the library")
def _embedded(root: str | os.PathLike | None, split: str, image_size: int | None,
              o: EmbeddedOptions) -> TensorClassDataset:
    return stroke_characters(split, cache_dir=o.cache_dir, image_size=image_size or 28)


@DATASETS.register("omniglot", OmniglotOptions, "characters",
                   "Omniglot, Vinyals split, rotations as classes")
def _omniglot(root: str | os.PathLike | None, split: str, image_size: int | None,
              o: OmniglotOptions) -> TensorClassDataset:
    _needs_root(root, "omniglot", "a folder")
    return omniglot(root, split, download=o.download, image_size=image_size or 28,
                    cache_dir=o.cache_dir)


@DATASETS.register("folder", FolderOptions, "images", "any folder of class folders")
def _folder(root: str | os.PathLike | None, split: str, image_size: int | None,
            o: FolderOptions) -> TensorClassDataset:
    _needs_root(root, "folder", "a folder of class folders")
    return image_folder(root, split, split_dir=o.split_dir, ratios=o.ratios, seed=o.split_seed,
                        image_size=image_size or 84, channels=o.channels, cache_dir=o.cache_dir,
                        convert=o.convert, skip_bad=o.skip_bad, decoder=o.decoder)


@DATASETS.register("unlabelled", UnlabelledOptions, "images",
                   "every image under a folder, without labels (self-supervised pre-training)")
def _unlabelled(root: str | os.PathLike | None, split: str, image_size: int | None,
                o: UnlabelledOptions) -> TensorClassDataset:
    _needs_root(root, "unlabelled", "a folder of images")
    return unlabelled_folder(root, split, image_size=image_size or 84, channels=o.channels,
                             cache_dir=o.cache_dir, convert=o.convert, skip_bad=o.skip_bad,
                             decoder=o.decoder)


def _decoded(o: DecodedOptions) -> dict[str, Any]:
    return {"cache_dir": o.cache_dir, "convert": o.convert, "skip_bad": o.skip_bad,
            "decoder": o.decoder}


@DATASETS.register("dogs", DogsOptions, "images", "Stanford Dogs, 70/20/30 breeds")
def _dogs(root: str | os.PathLike | None, split: str, image_size: int | None,
          o: DogsOptions) -> TensorClassDataset:
    _needs_root(root, "Stanford Dogs")
    return stanford_dogs(root, split, image_size=image_size or 84, crop=o.crop,
                         split_dir=o.split_dir, **_decoded(o))


@DATASETS.register("cub", DecodedOptions, "images", "CUB-200-2011, Chen et al.'s 100/50/50")
def _cub(root: str | os.PathLike | None, split: str, image_size: int | None,
         o: DecodedOptions) -> TensorClassDataset:
    _needs_root(root, "CUB-200-2011")
    return cub(root, split, image_size=image_size or 84, **_decoded(o))


@DATASETS.register("miniimagenet", MiniOptions, "images", "mini-ImageNet, Ravi's 64/16/20")
def _mini(root: str | os.PathLike | None, split: str, image_size: int | None,
          o: MiniOptions) -> TensorClassDataset:
    _needs_root(root, "mini-ImageNet")
    return mini_imagenet(root, split, image_size=image_size or 84, csv_dir=o.csv_dir,
                         split_dir=o.split_dir, **_decoded(o))


def needs_root(name: str) -> bool:
    """Whether dataset ``name`` is read from a folder (``root``)."""
    return getattr(DATASETS.get(name).config, "NEEDS_ROOT", True)


def option_names(name: str) -> list[str]:
    """The options dataset ``name`` takes."""
    return [f.name for f in fields(DATASETS.get(name).config)]


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None,
                 image_size: int | None = None, **options: Any) -> TensorClassDataset:
    """Load split ``split`` of dataset ``name`` (a name of :data:`DATASETS`) from ``root``.

    ``image_size`` None means the dataset's usual size (28 for the character datasets, 84 for
    natural images). ``options``: the dataset's typed options (its entry's dataclass, e.g.
    :class:`FolderOptions`); an option it does not take is refused, naming the ones it does.
    """
    dataset = DATASETS.get(name).build(root, split, image_size, DATASETS.config(name, options))
    dataset.name, dataset.split = name, split
    return dataset
