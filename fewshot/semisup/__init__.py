"""Semi-supervised pre-training from a few labels per class and the unlabelled rest (``fewshot
pretrain --method NAME --labels-per-class N``): Pseudo-Label and Mean Teacher, FixMatch and UDA,
MixMatch, Noisy Student. Importing this package registers the methods; the losses are pure
functions in :mod:`fewshot.semisup.losses`."""

# registered in this order (the order of --help and the tables)
from . import teachers  # noqa: F401, I001
from . import consistency, mixmatch, noisy_student  # noqa: F401, I001
from .base import SemiSupervisedLearner

__all__ = ["SemiSupervisedLearner"]
