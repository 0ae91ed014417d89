"""The data flags at run time: the options of ``--dataset`` they give (a flag the dataset does not
take is refused), their checks that need more than one flag or the file system, the dataset they
name, read onto ``--device``, and its part of a result's provenance (the flags themselves:
:func:`fewshot.cli.args.add_data_args`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from episodes import ClassDataset
from episodes.registry import load_dataset, needs_root, option_names

from ..engine.distributed import local_device
from .args import output_folder

# dataset option -> (its flag, the flag's value when not given): each --dataset takes the options
# its registry entry's dataclass has; a flag given for a dataset that does not take it is refused
DATA_FLAGS = {"split_dir": ("--split-dir", None), "ratios": ("--split-ratios", None),
              "split_seed": ("--split-seed", 0), "channels": ("--channels", 3),
              "convert": ("--no-convert", True), "skip_bad": ("--skip-bad-images", False),
              "download": ("--download", False), "crop": ("--crop-boxes", False),
              "csv_dir": ("--csv-dir", None), "decoder": ("--decoder", "auto"),
              "cache_dir": ("--cache-dir", None)}


def pick_device(name: str) -> torch.device:
    """The device ``--device`` names; under torchrun, ``cuda`` is this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return local_device(torch.device(name))


MACHINE_OPTIONS = ("cache_dir", "decoder", "download")  # how this machine reads the data


def data_provenance(args: argparse.Namespace, ds: ClassDataset) -> dict:
    """The dataset part of a result's provenance (:func:`fewshot.engine.provenance.provenance`):
    its name, its settings (root, the true image size, the dataset's options, not how this
    machine reads it) and the true channel count of ``ds``'s images."""
    options = {k: v for k, v in data_options(args).items() if k not in MACHINE_OPTIONS}
    return {"dataset": args.dataset, "channels": ds.image_shape[0],
            "settings": {"root": args.root, "image_size": ds.image_shape[-1], **options}}


def data_options(args: argparse.Namespace) -> dict:
    """The options of ``--dataset`` from the data flags: every option its entry takes, and a
    ``ValueError`` for a flag given that the dataset does not take (it would be ignored)."""
    values = {"split_dir": args.split_dir, "split_seed": args.split_seed,
              "ratios": tuple(args.split_ratios) if args.split_ratios else None,
              "channels": args.channels, "convert": not args.no_convert,
              "skip_bad": args.skip_bad_images, "download": args.download,
              "crop": args.crop_boxes, "csv_dir": args.csv_dir, "decoder": args.decoder,
              "cache_dir": args.cache_dir}
    takes = option_names(args.dataset)
    ignored = [DATA_FLAGS[k][0] for k, v in values.items()
               if k not in takes and v != DATA_FLAGS[k][1]]
    if ignored:
        flags = [DATA_FLAGS[k][0] for k in takes if k in DATA_FLAGS]
        raise ValueError(f"{', '.join(ignored)} does not apply to --dataset {args.dataset} "
                         f"(it takes {', '.join(flags) or 'none of the data flags'}): leave it out")
    return {k: values[k] for k in takes if k in values}


def check_data_args(args: argparse.Namespace) -> None:
    """Checks of the data arguments that need more than one argument or the file system."""
    output_folder("--cache-dir", args.cache_dir)
    cache = os.environ.get("FEWSHOT_CACHE")
    if args.cache_dir is None and cache and Path(cache).exists() and not Path(cache).is_dir():
        raise ValueError(f"FEWSHOT_CACHE={cache} is a file, not a folder: set it to a folder "
                         f"(or give --cache-dir)")
    if needs_root(args.dataset) and args.root is None:
        raise ValueError(f"the {args.dataset} dataset needs its folder: give --root")
    if args.split_dir is not None and args.split_ratios is not None:
        raise ValueError("--split-dir and --split-ratios both split the classes: give one")
    root = Path(args.root) if args.root is not None else None
    if root is not None and root.is_symlink() and not root.exists():
        raise FileNotFoundError(f"--root {root} is a link to nothing ({os.readlink(root)}): give "
                                f"the dataset's folder")
    if root is not None and root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--root {root} is a file, not a folder: give the dataset's folder")
    if root is not None and not root.exists() and not args.download:
        raise FileNotFoundError(f"--root {root} does not exist: check the path"
                                + (" (or add --download)" if "download" in option_names(
                                    args.dataset) else ""))
    data_options(args)  # flags the dataset would ignore are refused before any work


def dataset_from_args(args: argparse.Namespace, split: str):
    ds = load_dataset(args.dataset, split, args.root, args.image_size, **data_options(args))
    return ds.to(pick_device(args.device))
