"""Labelling new images with a trained learner: a folder of labelled support images in, a label per
query image out. Support and query files are read through the image pipeline recorded in the
model's checkpoint (:func:`fewshot.engine.checkpoint.recorded_pipeline`), the same function the dataset
loaders built the training images with."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from episodes import ImagePipeline, read_images, scan_class_folders, to_unit_float
from episodes.images import is_image_file

from ..models.learner import EpisodicLearner, ModelSpec
from ..refine import PrototypeRefiner
from .memory import bytes_per_item, chunks, image_chunk, items_per_chunk, memory_budget


@dataclass
class Prediction:
    """The label of one query image and the learner's probability for it."""

    path: Path
    label: str
    probability: float


def list_query_images(folder: str | os.PathLike, flag: str = "--query") -> list[Path]:
    """Image files under ``folder`` (recursively), sorted; a clear error naming ``flag`` if there
    are none."""
    folder = Path(folder)
    what = flag.lstrip("-")
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist: check the path ({flag})")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise FileNotFoundError(f"no image files in {what} folder {folder}")
    return files


def check_predict_pipeline(spec: ModelSpec, pipeline: ImagePipeline | None) -> ImagePipeline:
    """``pipeline`` if it fits the model's input (channels, size); warns that raw files are used
    whole when the model was trained on box crops."""
    if pipeline is None:
        raise ValueError("predict needs the image pipeline the model was trained with: pass "
                         "pipeline=recorded_pipeline(checkpoint, path) (fewshot.engine.checkpoint)")
    if (pipeline.channels, pipeline.size) != (spec.in_channels, spec.image_size):
        raise ValueError(f"image pipeline {pipeline.describe()} does not fit the model, which "
                         f"takes {spec.in_channels}-channel {spec.image_size}px images: state "
                         f"channels={spec.in_channels},size={spec.image_size}")
    if pipeline.crop == "boxes":
        warnings.warn("the model was trained on images cropped to bounding boxes, but raw files "
                      "carry no box and are used whole: crop support and query images to the "
                      "object first", stacklevel=3)
    return pipeline


def predict(learner: EpisodicLearner, spec: ModelSpec, support_dir: str | os.PathLike,
            query_dir: str | os.PathLike, device: torch.device | str = "cpu",
            convert: bool = True, batch_size: int | None = None, *,
            pipeline: ImagePipeline | None = None, skip_bad: bool = False,
            max_memory: int | None = None, unlabelled_dir: str | os.PathLike | None = None,
            refiner: PrototypeRefiner | None = None) -> list[Prediction]:
    """Classify every image of ``query_dir`` among the classes of ``support_dir``.

    Args:
        support_dir: one folder per class (the folder name is the label) holding its support images;
            classes may have different numbers of images.
        query_dir: images to label (searched recursively).
        convert: convert images whose channel count differs from the model's; if False such an
            image raises an error naming it.
        batch_size: query images read and scored per pass (None: as many as fit the budget).
        skip_bad: leave out unreadable files (support and query) with a warning naming them,
            instead of raising :class:`~episodes.ImageFileError`; skipped queries get no
            prediction.
        pipeline: how the model's training images were read from files (required; from
            :func:`fewshot.engine.checkpoint.recorded_pipeline`); support and query files are read
            through it into ``[1, S, C, H, W]`` and ``[1, Q, C, H, W]`` floats in ``[0, 1]``.
        max_memory: bytes one forward may take (None: a share of the device's free memory).
            Learners with per-image features embed the support set once, in chunks, and each
            query once; the predictions do not depend on the chunking.
        unlabelled_dir: images of the support classes without labels (searched recursively),
            read through the same pipeline; ``refiner`` refines the learner's prototypes with
            their features before the queries are scored (Ren et al. 2018,
            :mod:`fewshot.refine`; a learner with per-image features, such as ProtoNet).
    """
    pipeline = check_predict_pipeline(spec, pipeline)
    classes = scan_class_folders(support_dir, skip_bad=skip_bad)
    names = list(classes)
    if len(names) < 2:
        raise ValueError(f"support folder {support_dir} has {len(names)} class folder(s): give at "
                         f"least two classes to choose between")
    fixed = getattr(learner, "fixed_way", None)
    if fixed is not None and fixed != len(names):
        raise ValueError(f"this {spec.method} model classifies among exactly {fixed} classes (it "
                         f"was trained on {fixed}-way episodes) but --support {support_dir} has "
                         f"{len(names)} class folders: give {fixed} class folders, or use a model "
                         f"trained with --way {len(names)} (or --option head=zero, for any number)")
    files = [f for n in names for f in classes[n]]
    sx, kept = read_images(files, pipeline, convert=convert, skip_bad=skip_bad)
    sy = torch.tensor([i for i, n in enumerate(names) for _ in classes[n]])[kept]
    empty = [n for i, n in enumerate(names) if not bool((sy == i).any())]
    if empty:
        raise ValueError(f"support class folder(s) {', '.join(empty)} in {support_dir} have no "
                         f"readable image: add images, or remove the folder(s)")
    queries = list_query_images(query_dir)
    learner.eval().to(device)
    device = torch.device(device)
    budget = memory_budget(device, max_memory)
    sy = sy.to(device).unsqueeze(0)
    if (unlabelled_dir is None) != (refiner is None):
        raise ValueError("predict refines prototypes with unlabelled images: give both "
                         "unlabelled_dir and refiner, or neither")
    if refiner is not None and not learner.features_per_image():
        raise ValueError(f"{spec.method} has no per-image features to refine prototypes with")
    if learner.features_per_image():
        chunk = image_chunk(learner.embed, tuple(sx.shape[1:]), device, budget)

        def embed_all(x: Tensor) -> Tensor:
            with torch.no_grad():
                return torch.cat([learner.embed(to_unit_float(x[s].to(device)))
                                  for s in chunks(len(x), chunk)]).unsqueeze(0)
        support = embed_all(sx)
        if refiner is not None:
            ux, _ = read_images(list_query_images(unlabelled_dir, "--unlabelled"), pipeline,
                                convert=convert, skip_bad=skip_bad)
            if not len(ux):
                raise ValueError(f"no readable image in unlabelled folder {unlabelled_dir}")
            unlabelled = embed_all(ux).flatten(2)
            refiner.eval().to(device)

        def score(qx: Tensor) -> Tensor:
            with torch.no_grad():
                query = learner.embed(qx[0]).unsqueeze(0)
                if refiner is not None:
                    return refiner(support.flatten(2), sy, query.flatten(2), unlabelled,
                                   len(names))
                return learner.head(support, sy, query, len(names))
    else:
        sx = to_unit_float(sx.to(device)).unsqueeze(0)
        one, two = (bytes_per_item(lambda q=q: learner.infer(sx, sy, sx[:, :q], len(names)))
                    for q in (1, 2))
        chunk = items_per_chunk(max(two - one, 1), max(budget - (2 * one - two), 1))
        if len(queries) > (batch_size or chunk):
            warnings.warn(f"{spec.method} normalises queries with the statistics of their batch: "
                          f"the {len(queries)} queries are scored {batch_size or chunk} at a time, "
                          "so their predictions depend on that number; give a larger "
                          "--max-memory to score them in one pass", stacklevel=2)

        def score(qx: Tensor) -> Tensor:
            return learner.infer(sx, sy, qx, len(names))
    out: list[Prediction] = []
    for s in chunks(len(queries), batch_size or chunk):
        part = queries[s]
        qx, kept = read_images(part, pipeline, convert=convert, skip_bad=skip_bad)
        part = [part[i] for i in kept]
        if not part:
            continue
        probs = score(to_unit_float(qx.to(device)).unsqueeze(0))[0].float().softmax(-1)
        p, label = probs.max(-1)
        out += [Prediction(f, names[int(c)], float(q)) for f, c, q in zip(part, label, p, strict=True)]
    return out
