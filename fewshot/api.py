"""A trained model as a classifier in three lines::

    clf = FewShotClassifier.from_checkpoint("runs/omniglot/best.pt")
    clf.fit(support_images, labels)          # or clf.fit("support/"), a folder of class folders
    clf.predict(query_images)                # labels; predict_proba: probabilities [Q, N]

Images are tensors (``[B, C, H, W]`` uint8, or floats in ``[0, 1]``; one image ``[C, H, W]``),
image file paths, or a folder; files are read through the image pipeline the checkpoint recorded
(:mod:`episodes.pipeline`), as ``fewshot predict`` reads them. Labels are any hashable values
(class names, ints). Prediction is :mod:`fewshot.engine.predict`'s: the learner fitted to the
support set once (:func:`~fewshot.engine.predict.support_scorer`), queries scored in chunks that
fit the memory budget, probabilities divided by the checkpoint's temperature
(:mod:`fewshot.calibration`) unless ``temperature=False``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from episodes import ImagePipeline, read_images

from .engine.checkpoint import load_learner, recorded_pipeline
from .engine.predict import (
    check_images,
    check_predict_pipeline,
    check_way,
    file_probabilities,
    list_query_images,
    read_support_folder,
    support_scorer,
    warn_split,
)
from .heads import HeadLearner, head_config
from .models.learner import EpisodicLearner, ModelSpec
from .models.weights import backbone_of

Images = Tensor | str | os.PathLike | Sequence[str | os.PathLike]


class FewShotClassifier:
    """A trained learner with a support set: ``fit`` the labelled support images, then
    ``predict`` / ``predict_proba`` query images.

    Args:
        learner, spec: the trained learner and its spec (:func:`fewshot.engine.load_learner`).
        pipeline: how to read image files for this model (None: tensors only).
        temperature: logits are divided by it before the softmax.
        device: where the model runs; max_memory: bytes one forward may take (None: a share of
            the device's free memory).
    """

    def __init__(self, learner: EpisodicLearner, spec: ModelSpec,
                 pipeline: ImagePipeline | None = None, temperature: float = 1.0,
                 device: torch.device | str = "cpu", max_memory: int | None = None) -> None:
        self.learner, self.spec, self.temperature = learner.eval().to(device), spec, temperature
        self.pipeline = None if pipeline is None else check_predict_pipeline(spec, pipeline)
        self.device, self.max_memory = torch.device(device), max_memory
        self.classes_: list[Hashable] = []
        self._score: Any = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: torch.device | str = "cpu", *,
                        head: str | None = None, head_options: dict[str, Any] | None = None,
                        temperature: bool = True, pipeline: ImagePipeline | str | None = None,
                        max_memory: int | None = None) -> FewShotClassifier:
        """The learner of checkpoint ``path`` (written by ``fewshot train`` or ``pretrain``).

        Args:
            head: fit this head of :data:`fewshot.heads.HEADS` on the checkpoint's backbone
                instead of using its own learner (as ``fewshot eval --head``), with
                ``head_options``; the checkpoint's temperature is its learner's, so a head
                predicts at temperature 1.
            temperature: divide the logits by the temperature the checkpoint records (fitted on
                validation episodes); False: the learner's own probabilities.
            pipeline: for a checkpoint that records no image pipeline: how to read files.
        """
        learner, spec, ckpt = load_learner(path, device)
        t = ckpt["temperature"] if temperature else 1.0
        if head is not None:
            learner, t = HeadLearner(backbone_of(learner), head,
                                     head_config(head, dict(head_options or {}))), 1.0
        elif head_options:
            raise ValueError("head_options need head=NAME")
        # no recorded pipeline and none given: tensors still work, files say why they do not
        pipe = (None if ckpt["pipeline"] is None and pipeline is None
                else recorded_pipeline(ckpt, path, pipeline))
        return cls(learner, spec, pipe, t, device, max_memory)

    def __repr__(self) -> str:
        fitted = (f"{len(self.classes_)} classes {self.classes_[:5]}"
                  + ("..." if len(self.classes_) > 5 else "")) if self.classes_ else "not fitted"
        return (f"FewShotClassifier({self.spec.method} {self.spec.backbone}, "
                f"{self.spec.in_channels}x{self.spec.image_size}x{self.spec.image_size} images, "
                f"T={self.temperature:.3g}, {self.device}, {fitted})")

    def fit(self, images: Images, labels: Sequence[Hashable] | Tensor | None = None
            ) -> FewShotClassifier:
        """Take the labelled support set: ``images`` ``[S, C, H, W]`` (or S file paths) with S
        ``labels``, or a folder of class folders (no labels: the folder names are). The classes
        are ``self.classes_``, in order of first appearance (folders: sorted)."""
        if isinstance(images, str | os.PathLike) and Path(images).is_dir():
            if labels is not None:
                raise ValueError(f"fit({images!r}) reads the labels from its class folders: "
                                 f"leave labels out")
            x, y, names = read_support_folder(images, self._files_pipeline())
            classes: list[Hashable] = list(names)
        else:
            if labels is None:
                raise ValueError("fit(images, labels): give a label per support image, or a "
                                 "folder of class folders")
            values = labels.tolist() if torch.is_tensor(labels) else list(labels)
            x = self._images(images, "support images")
            if len(values) != len(x):
                raise ValueError(f"{len(x)} support images but {len(values)} labels: give one "
                                 f"label per image")
            classes = list(dict.fromkeys(values))
            index = {c: i for i, c in enumerate(classes)}
            y = torch.tensor([index[v] for v in values], dtype=torch.long)
        check_way(self.learner, self.spec, len(classes), "the support set")
        self._score, self._per_pass = support_scorer(self.learner, self.spec, x, y, len(classes),
                                                     self.device, self.max_memory,
                                                     self.temperature)
        self.classes_ = classes
        return self

    def predict_proba(self, images: Images) -> Tensor:
        """Probabilities ``[Q, N]`` (CPU float, columns in the order of ``classes_``) of query
        ``images``: a tensor ``[Q, C, H, W]`` (or one image ``[C, H, W]``), Q file paths, or a
        folder (its image files, searched recursively, sorted)."""
        if self._score is None:
            raise ValueError("call fit(support_images, labels) before predicting")
        if torch.is_tensor(images):
            x = check_images(images, self.spec, "query images")
            warn_split(self.learner, self.spec, len(x), self._per_pass)
            return torch.cat([self._score(x[s:s + self._per_pass])
                              for s in range(0, len(x), self._per_pass)])
        files = self._paths(images)
        warn_split(self.learner, self.spec, len(files), self._per_pass)
        return torch.cat([p for _, p in file_probabilities(self._score, files,
                                                           self._files_pipeline(),
                                                           self._per_pass)])

    def predict(self, images: Images) -> list[Hashable]:
        """The most probable label of each query image (see :meth:`predict_proba`)."""
        return [self.classes_[int(i)] for i in self.predict_proba(images).argmax(-1)]

    def _files_pipeline(self) -> ImagePipeline:
        if self.pipeline is None:
            raise ValueError("this checkpoint records no image pipeline, so files cannot be read "
                             "the way the model saw them: give tensors, or from_checkpoint(..., "
                             "pipeline='channels=1,size=28,resample=area,invert=true')")
        return self.pipeline

    def _paths(self, images: Images) -> list[Path]:
        if isinstance(images, str | os.PathLike):
            path = Path(images)
            if path.is_dir():
                return list_query_images(path)
            return [path]
        return [Path(p) for p in images]

    def _images(self, images: Images, what: str) -> Tensor:
        """``images`` as checked floats ``[B, C, H, W]`` in ``[0, 1]``, or files read through the
        pipeline (uint8)."""
        if torch.is_tensor(images):
            return check_images(images, self.spec, what)
        return read_images(self._paths(images), self._files_pipeline())[0]
