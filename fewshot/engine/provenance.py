"""Where a result came from: the ``provenance`` block of ``run.json`` and of every JSON output
(the checkpoint's SHA-256, the dataset and its settings, the split, the seed, the device actually
used, the images' true channel count, the library version, the date), and the run a checkpoint
belongs to (the ``run.json`` beside it), whose data settings ``eval``, ``predict`` and
``plot-embeddings`` take when they are not given."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from episodes.io import file_sha256

from ..version import library_version
from .runs import RUN_FILE, RunError, legacy_args, read_run

# the settings (run.json ``args`` keys) that say which images a run read: the ones a command
# working on its checkpoint takes from it; where and how they are decoded (cache, decoder,
# device, download) belong to the machine, not to the run
DATA_SETTINGS = ("dataset", "root", "image_size", "split_dir", "split_ratios", "split_seed",
                 "channels", "no_convert", "skip_bad_images", "crop_boxes", "csv_dir")


def device_name(device: torch.device | str) -> str:
    """The device as used: ``cpu`` or ``cuda:N`` (``cuda`` with its index), never ``auto``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def provenance(*, dataset: str, settings: Mapping[str, Any], split: str | None,
               seed: int | None, device: torch.device | str, channels: int,
               files: Mapping[str, str | os.PathLike | None] | None = None,
               **extra: Any) -> dict[str, Any]:
    """The provenance block of a result: ``dataset`` and its ``settings`` (root, image size and
    the dataset's options), the class ``split`` and ``seed`` it used, the ``device`` it ran on,
    the ``channels`` of the images the model saw; each of ``files`` (e.g. ``checkpoint``) given
    as its path and SHA-256 (``checkpoint_sha256``); ``extra`` as given (None left out)."""
    out: dict[str, Any] = {}
    for name, path in (files or {}).items():
        if path is not None and Path(path).is_file():
            out[name] = str(path)
            out[f"{name}_sha256"] = file_sha256(path)
    out.update(dataset=dataset, dataset_settings=dict(settings), split=split, seed=seed,
               device=device_name(device), channels=int(channels),
               **{k: v for k, v in extra.items() if v is not None},
               fewshot_version=library_version(),
               date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return out


def checkpoint_run(checkpoint: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The ``run.json`` beside ``checkpoint`` and its settings (renamed ones under their new
    names), or None when there is none. A run.json that is there but unreadable is an error
    (:class:`~fewshot.engine.runs.RunError`)."""
    path = Path(checkpoint).parent / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = read_run(path)
    except RunError as e:
        raise RunError(f"--checkpoint {checkpoint}: {e}") from None
    return path, legacy_args(record["args"])
