"""Self-supervised pre-training from unlabelled images (``fewshot pretrain --method NAME``):
pretext tasks (rotation, jigsaw), contrastive (SimCLR, MoCo), non-contrastive joint embeddings
(BYOL, SimSiam, Barlow Twins, VICReg) and clustering (DeepCluster, UIC). Importing this package
registers the methods; the losses are pure functions in :mod:`fewshot.ssl.losses`."""

from . import clustering, contrastive, joint, pretext_methods  # noqa: F401
from .base import SelfSupervisedLearner

SSL_METHODS = ("rotation", "jigsaw", "simclr", "moco", "byol", "simsiam", "barlow-twins",
               "vicreg", "deepcluster", "uic")

__all__ = ["SSL_METHODS", "SelfSupervisedLearner"]
