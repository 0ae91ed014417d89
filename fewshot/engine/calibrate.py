"""Temperature scaling of a trained checkpoint: fit the temperature on fixed episodes
(:func:`fewshot.calibration.fit_temperature` on :func:`fewshot.engine.evaluate.query_logits`) and
record it in the checkpoint (:func:`fewshot.engine.checkpoint.set_temperature`), where ``predict``,
:class:`fewshot.FewShotClassifier` and ``eval`` read it. ``fewshot train`` calls it on its
validation episodes at the end of a run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from episodes import ClassDataset, FixedEpisodes
from episodes.io import atomic_torch_save

from ..calibration import T_RANGE, expected_calibration_error, fit_temperature, stored_temperature
from . import distributed
from .checkpoint import CheckpointFile, load_learner
from .evaluate import query_logits


@dataclass
class Calibration:
    """A fitted temperature and the calibration error of the episodes it was fitted on, before
    (at temperature 1) and after; ``recorded``: False when the fit ended at an end of
    :data:`~fewshot.calibration.T_RANGE` (the NLL has no minimum inside it, e.g. every
    prediction right), and the checkpoint was left at temperature 1."""

    temperature: float
    ece_before: float
    ece_after: float
    recorded: bool = True

    def __str__(self) -> str:
        if not self.recorded:
            return (f"no temperature recorded (the fit ended at T={self.temperature:.3g}, an end "
                    f"of its range: the NLL has no minimum, as when every prediction is right or "
                    f"the logits carry no information; ECE {100 * self.ece_before:.2f} % at T=1)")
        return (f"temperature T={self.temperature:.3g} (ECE {100 * self.ece_before:.2f} % -> "
                f"{100 * self.ece_after:.2f} %)")


def set_temperature(path: str | os.PathLike, temperature: float) -> None:
    """Record ``temperature`` (:func:`fewshot.calibration.fit_temperature`) in the fewshot
    checkpoint ``path``, atomically; everything else in it is kept as it is."""
    ckpt = dict(CheckpointFile(path).checkpoint())
    ckpt["temperature"] = stored_temperature(temperature, "the temperature")
    atomic_torch_save(ckpt, path)


def calibrate_checkpoint(path: str | os.PathLike, dataset: ClassDataset, episodes: FixedEpisodes,
                         device: torch.device | str = "cpu", max_memory: int | None = None
                         ) -> Calibration:
    """Fit the temperature of the learner of checkpoint ``path`` on ``episodes`` of ``dataset``
    and write it into the checkpoint (in a distributed run every rank scores its part of the
    episodes and rank 0 writes); a fit at an end of the range is not written (see
    :class:`Calibration`)."""
    learner, _, _ = load_learner(path, device)
    logits, labels = query_logits(learner, episodes, dataset, device=device, max_memory=max_memory)
    t = fit_temperature(logits, labels)
    inside = T_RANGE[0] * 1.001 < t < T_RANGE[1] / 1.001
    if inside:
        distributed.on_main(set_temperature, path, t)
    return Calibration(t, expected_calibration_error(logits, labels),
                       expected_calibration_error(logits, labels, temperature=t), inside)
