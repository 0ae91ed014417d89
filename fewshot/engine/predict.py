"""Labelling new images with a trained learner: a folder of labelled support images in, a label per
query image out. Support and query files are read through the image pipeline recorded in the
model's checkpoint (:func:`fewshot.engine.checkpoint.recorded_pipeline`), the same function the dataset
loaders built the training images with."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
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


def check_images(images: Tensor, spec: ModelSpec, what: str = "images") -> Tensor:
    """User images for the model of ``spec`` as floats in ``[0, 1]`` ``[B, C, H, W]``: uint8
    images are divided by 255, float images must already be in ``[0, 1]``; a single image
    ``[C, H, W]`` becomes a batch of one. ``ValueError`` naming ``what`` and the fix when the
    dtype, dimensions, channels, size or range do not fit the model."""
    if not torch.is_tensor(images):
        raise TypeError(f"{what}: expected a tensor [B, C, H, W], file paths or a folder, got "
                        f"{type(images).__name__}")
    wanted = f"{spec.in_channels}-channel {spec.image_size}x{spec.image_size} images"
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"{what} have shape {list(images.shape)}; this checkpoint reads "
                         f"{wanted}: give a batch [B, {spec.in_channels}, {spec.image_size}, "
                         f"{spec.image_size}]")
    c, h, w = images.shape[1:]
    if c != spec.in_channels:
        fix = ("average the channels (images.mean(1, keepdim=True))" if spec.in_channels == 1
               else "repeat the channel (images.expand(-1, 3, -1, -1))")
        raise ValueError(f"{what} have {c} channels; this checkpoint reads {wanted}: {fix}, or "
                         f"give file paths, which are read with the checkpoint's image pipeline")
    if (h, w) != (spec.image_size, spec.image_size):
        raise ValueError(f"{what} are {h}x{w}; this checkpoint reads {wanted}: resize them, or "
                         f"give file paths, which are read with the checkpoint's image pipeline")
    if images.dtype == torch.uint8:
        return to_unit_float(images)
    if not images.is_floating_point():
        raise ValueError(f"{what} are {images.dtype}: give uint8 images (0..255) or floats in "
                         f"[0, 1]")
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ValueError(f"{what} have values in [{float(images.min()):.3g}, "
                         f"{float(images.max()):.3g}]; this checkpoint reads images in [0, 1] "
                         f"(the model normalises them itself): give unnormalised images")
    return images.float()


def check_way(learner: EpisodicLearner, spec: ModelSpec, n_way: int, where: str,
              unit: str = "classes") -> None:
    """Refuse ``n_way`` classes (``unit``: what they are, in ``where``) for a model that
    classifies among a fixed number; fewer than two classes are refused for any model."""
    if n_way < 2:
        raise ValueError(f"{where} gives {n_way} class(es): give at least two classes to choose "
                         f"between")
    fixed = getattr(learner, "fixed_way", None)
    if fixed is not None and fixed != n_way:
        raise ValueError(f"this {spec.method} model classifies among exactly {fixed} classes (it "
                         f"was trained on {fixed}-way episodes) but {where} has {n_way} {unit}: "
                         f"give {fixed} {unit}, or use a model trained with --way {n_way} (or "
                         f"--option head=zero, for any number)")


Scorer = Callable[[Tensor], Tensor]


def support_scorer(learner: EpisodicLearner, spec: ModelSpec, support_x: Tensor,
                   support_y: Tensor, n_way: int, device: torch.device | str = "cpu",
                   max_memory: int | None = None, temperature: float = 1.0,
                   unlabelled_x: Tensor | None = None, refiner: PrototypeRefiner | None = None
                   ) -> tuple[Scorer, int]:
    """The learner fitted to a support set, as a function of query images.

    Args:
        support_x: float ``[S, C, H, W]`` in ``[0, 1]`` (or uint8); support_y: long ``[S]`` in
            ``0..n_way-1`` (classes may have different numbers of images).
        temperature: the logits are divided by it before the softmax (:mod:`fewshot.calibration`).
        unlabelled_x: images of the support classes without labels ``[U, C, H, W]``, with
            ``refiner``: the prototypes are refined with their features before the queries are
            scored (Ren et al. 2018, :mod:`fewshot.refine`; learners with per-image features).
    Returns:
        ``score``: float query images ``[Q, C, H, W]`` in ``[0, 1]`` -> probabilities ``[Q, N]``
        (on the CPU); and how many queries one call may take within the memory budget.
        Learners with per-image features embed the support set once, in chunks, and each query
        once; the others run the whole support set with each batch of queries.
    """
    learner.eval().to(device)
    device = torch.device(device)
    budget = memory_budget(device, max_memory)
    sy = support_y.to(device).unsqueeze(0)
    if support_x.dtype == torch.uint8:
        support_x = to_unit_float(support_x)
    if (unlabelled_x is None) != (refiner is None):
        raise ValueError("prototypes are refined with unlabelled images: give both the "
                         "unlabelled images and the refiner, or neither")
    if refiner is not None and not learner.features_per_image():
        raise ValueError(f"{spec.method} has no per-image features to refine prototypes with")
    if learner.features_per_image():
        chunk = image_chunk(learner.embed, tuple(support_x.shape[1:]), device, budget)

        def embed_all(x: Tensor) -> Tensor:  # [B, C, H, W] in [0, 1] -> [1, B, *F]
            with torch.no_grad():
                return torch.cat([learner.embed(x[s].to(device))
                                  for s in chunks(len(x), chunk)]).unsqueeze(0)
        support = embed_all(support_x)
        if refiner is not None:
            unlabelled = embed_all(to_unit_float(unlabelled_x) if unlabelled_x.dtype == torch.uint8
                                   else unlabelled_x).flatten(2)
            refiner.eval().to(device)

        def logits(qx: Tensor) -> Tensor:
            with torch.no_grad():
                query = learner.embed(qx).unsqueeze(0)
                if refiner is not None:
                    return refiner(support.flatten(2), sy, query.flatten(2), unlabelled, n_way)[0]
                return learner.head(support, sy, query, n_way)[0]
    else:
        sx = support_x.to(device).unsqueeze(0)
        one, two = (bytes_per_item(lambda q=q: learner.infer(sx, sy, sx[:, :q], n_way))
                    for q in (1, 2))
        chunk = items_per_chunk(max(two - one, 1), max(budget - (2 * one - two), 1))

        def logits(qx: Tensor) -> Tensor:
            return learner.infer(sx, sy, qx.unsqueeze(0), n_way)[0]

    def score(qx: Tensor) -> Tensor:
        return (logits(qx.to(device)).float() / temperature).softmax(-1).cpu()
    return score, chunk


def warn_split(learner: EpisodicLearner, spec: ModelSpec, queries: int, per_pass: int) -> None:
    """Warn that the predictions of a learner whose queries share batch statistics depend on
    how many are scored together, when ``queries`` are scored ``per_pass`` at a time."""
    if not learner.features_per_image() and queries > per_pass:
        warnings.warn(f"{spec.method} normalises queries with the statistics of their batch: "
                      f"the {queries} queries are scored {per_pass} at a time, so their "
                      "predictions depend on that number; give a larger --max-memory "
                      "(max_memory) to score them in one pass", stacklevel=3)


def read_support_folder(support_dir: str | os.PathLike, pipeline: ImagePipeline,
                        convert: bool = True, skip_bad: bool = False
                        ) -> tuple[Tensor, Tensor, list[str]]:
    """A folder of class folders (the folder name is the label) read through ``pipeline``:
    uint8 images ``[S, C, H, W]``, labels long ``[S]`` and the class names (sorted)."""
    classes = scan_class_folders(support_dir, skip_bad=skip_bad)
    names = list(classes)
    files = [f for n in names for f in classes[n]]
    sx, kept = read_images(files, pipeline, convert=convert, skip_bad=skip_bad)
    sy = torch.tensor([i for i, n in enumerate(names) for _ in classes[n]])[kept]
    empty = [n for i, n in enumerate(names) if not bool((sy == i).any())]
    if empty:
        raise ValueError(f"support class folder(s) {', '.join(empty)} in {support_dir} have no "
                         f"readable image: add images, or remove the folder(s)")
    return sx, sy, names


def file_probabilities(score: Scorer, files: list[Path], pipeline: ImagePipeline, per_pass: int,
                       convert: bool = True, skip_bad: bool = False
                       ) -> Iterator[tuple[list[Path], Tensor]]:
    """The files read through ``pipeline`` ``per_pass`` at a time and scored: the files that
    were read (all, unless ``skip_bad``) and their probabilities ``[q, N]``."""
    for s in chunks(len(files), per_pass):
        qx, kept = read_images(files[s], pipeline, convert=convert, skip_bad=skip_bad)
        if kept:
            yield [files[s][i] for i in kept], score(to_unit_float(qx))


def predict(learner: EpisodicLearner, spec: ModelSpec, support_dir: str | os.PathLike,
            query_dir: str | os.PathLike, device: torch.device | str = "cpu",
            convert: bool = True, batch_size: int | None = None, *,
            pipeline: ImagePipeline | None = None, skip_bad: bool = False,
            max_memory: int | None = None, temperature: float = 1.0,
            unlabelled_dir: str | os.PathLike | None = None,
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
            through it into floats in ``[0, 1]``.
        max_memory: bytes one forward may take (None: a share of the device's free memory).
            Learners with per-image features embed the support set once, in chunks, and each
            query once; the predictions do not depend on the chunking.
        temperature: the logits are divided by it before the softmax (the checkpoint's
            ``temperature``, fitted on validation episodes: calibrated probabilities; 1: the
            learner's own).
        unlabelled_dir: images of the support classes without labels (searched recursively),
            read through the same pipeline; ``refiner`` refines the learner's prototypes with
            their features before the queries are scored (Ren et al. 2018,
            :mod:`fewshot.refine`; a learner with per-image features, such as ProtoNet).
    """
    pipeline = check_predict_pipeline(spec, pipeline)
    sx, sy, names = read_support_folder(support_dir, pipeline, convert, skip_bad)
    check_way(learner, spec, len(names), f"--support {support_dir}", "class folders")
    queries = list_query_images(query_dir)
    if (unlabelled_dir is None) != (refiner is None):
        raise ValueError("predict refines prototypes with unlabelled images: give both "
                         "unlabelled_dir and refiner, or neither")
    ux = None
    if unlabelled_dir is not None:
        ux, _ = read_images(list_query_images(unlabelled_dir, "--unlabelled"), pipeline,
                            convert=convert, skip_bad=skip_bad)
        if not len(ux):
            raise ValueError(f"no readable image in unlabelled folder {unlabelled_dir}")
    score, chunk = support_scorer(learner, spec, sx, sy, len(names), device, max_memory,
                                  temperature, ux, refiner)
    warn_split(learner, spec, len(queries), batch_size or chunk)
    out: list[Prediction] = []
    for files, probs in file_probabilities(score, queries, pipeline, batch_size or chunk,
                                           convert, skip_bad):
        p, label = probs.max(-1)
        out += [Prediction(f, names[int(c)], float(q)) for f, c, q in zip(files, label, p, strict=True)]
    return out
