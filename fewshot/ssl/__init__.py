"""Self-supervised pre-training from unlabelled images (``fewshot pretrain --method NAME``):
pretext tasks (rotation, jigsaw, context prediction, colourisation), generative (autoencoder,
GAN), a triplet embedding, contrastive (SimCLR, MoCo), non-contrastive joint embeddings
(BYOL, SimSiam, Barlow Twins, VICReg) and clustering (DeepCluster, UIC). Importing this package
registers the methods; the losses are pure functions in :mod:`fewshot.ssl.losses`."""

# registered in this order (the order of --help and the tables): pretext, generative, triplet,
# contrastive, joint, clustering
from . import pretext_methods, context, colour  # noqa: F401, I001
from . import autoencoder, gan, triplet  # noqa: F401, I001
from . import contrastive, joint  # noqa: F401, I001
from . import clustering  # noqa: F401, I001
from .base import SelfSupervisedLearner

__all__ = ["SelfSupervisedLearner"]
