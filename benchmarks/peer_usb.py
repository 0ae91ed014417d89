"""USB's FixMatch (microsoft/Semi-supervised-learning, PyPI ``semilearn``) driven with our batches,
for ``benchmarks/usb_fixmatch.py`` and ``tests/test_usb_fixmatch.py``.

What of USB runs: its configuration builder (``semilearn.lighting.get_config``: every default of
its command line and of FixMatch's own arguments), ``FixMatch.__init__`` (``AlgorithmBase``: the
model and its EMA copy from our ``net_builder``, the optimiser and schedule, the hooks), its
``train_step`` (one forward pass over labelled, weak and strong images, ``use_cat``; ``CELoss``;
``compute_prob``; ``FixedThresholdingHook`` for the mask; ``PseudoLabelingHook`` for the targets;
``ConsistencyLoss``), then per step its ``ParamUpdateHook`` (backward, optimiser and scheduler step,
``zero_grad``) and ``EMAHook`` (the EMA of the weights, ``ema_m``). What does not: its datasets and
data loaders (USB is given no dataset, so it builds none: the batches are ours, the same tensors as
our run's), and the evaluation, checkpoint, logging and timer hooks (its evaluation needs its data
loaders; both runs are scored by the same few-shot protocol instead).

The network is ours: the Conv-4 backbone and the linear classifier of our FixMatch learner, in
:class:`USBNet`, the interface USB's algorithms call (``forward(x)`` returning ``{"logits",
"feat"}``, ``only_feat``/``only_fc``).

USB's package import pulls in its text, audio and logging stacks (transformers, torchaudio, wandb,
aim, scikit-image), so it lives in a virtual environment of its own (see
``benchmarks/usb_fixmatch.py``); this module imports it only where :func:`usb_available` says so.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import torch
from torch import Tensor, nn

from episodes import SemiSupervisedBatch
from fewshot.engine.train_config import TrainConfig, make_optimizer


def usb_available() -> bool:
    """Whether ``semilearn`` and what its import needs are installed in this interpreter."""
    if importlib.util.find_spec("semilearn") is None:
        return False
    try:
        import semilearn  # noqa: F401  (its import fails without its dependencies)
    except ImportError:
        return False
    return True


class USBNet(nn.Module):
    """Our backbone and classifier as a USB network: ``[B, C, H, W] -> {"logits": [B, N],
    "feat": [B, D]}`` (``only_feat``: the features ``[B, D]``; ``only_fc``: ``x`` are features,
    the logits ``[B, N]``)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.classifier = backbone, classifier

    def forward(self, x: Tensor, only_fc: bool = False, only_feat: bool = False,
                **kwargs: Any) -> Tensor | dict[str, Tensor]:
        if only_fc:
            return self.classifier(x)
        feat = self.backbone(x).flatten(1)
        if only_feat:
            return feat
        return {"logits": self.classifier(feat), "feat": feat}


def usb_config(num_classes: int, steps: int, batch: int, mu: int, **overrides: Any) -> Any:
    """USB's own argument namespace for FixMatch (``get_config``: its defaults, e.g. ``p_cutoff``
    0.95, ``T`` 0.5, ``hard_label`` true, ``ulb_loss_ratio`` 1, ``ema_m`` 0.999, ``use_cat``
    true, ``amp`` false, ``clip_grad`` 0) with the run's sizes and ``overrides``; ``dataset`` is
    one USB does not know, so it loads no data; ``distributed`` false, as USB's ``train.py``
    sets it for one process."""
    from semilearn.lighting import get_config
    return get_config({"algorithm": "fixmatch", "dataset": "given-as-tensors", "num_classes":
                       num_classes, "num_train_iter": steps, "epoch": 1, "batch_size": batch,
                       "uratio": mu, "num_labels": 0, "gpu": None, "distributed": False,
                       **overrides})


def build_usb_fixmatch(backbone: nn.Module, classifier: nn.Linear, args: Any,
                       device: torch.device | str = "cpu") -> Any:
    """USB's ``FixMatch`` on copies of ``backbone`` and ``classifier`` (the model and its EMA
    copy start from their weights), on ``device``."""
    from semilearn.algorithms.fixmatch import FixMatch

    def net_builder(num_classes: int, **kwargs: Any) -> USBNet:
        return USBNet(copy.deepcopy(backbone), copy.deepcopy(classifier))

    alg = FixMatch(args, net_builder)
    alg.model.to(device)
    alg.ema_model.to(device)
    return alg


def use_our_optimizer(alg: Any, config: TrainConfig) -> None:
    """Give USB's algorithm our optimiser and schedule (``make_optimizer``: SGD with weight decay
    on every parameter, no Nesterov, cosine to 0) in place of its own (Nesterov SGD without
    decay on biases and BatchNorm, cosine over 7/16 of a period)."""
    alg.optimizer, alg.scheduler = make_optimizer(alg.model.parameters(), config)


def start(alg: Any) -> None:
    """What USB's ``train`` does before the first step that matters here: the EMA's shadow
    weights (``EMAHook.before_run``), the model in training mode."""
    alg.model.train()
    alg.call_hook("before_run", "EMAHook")


def usb_step(alg: Any, batch: SemiSupervisedBatch) -> dict[str, float]:
    """One USB training step on our batch (labelled view, then the unlabelled weak and strong
    views ``batch.views[0]``, ``[1]``): its ``train_step``, ``ParamUpdateHook`` and ``EMAHook``.
    Returns its log values (``train/sup_loss``, ``train/unsup_loss``, ``train/total_loss``,
    ``train/util_ratio``: the mask's mean)."""
    alg.out_dict, alg.log_dict = alg.train_step(batch.images, batch.labels, batch.views[0],
                                                batch.views[1])
    alg.call_hook("after_train_step", "ParamUpdateHook")
    alg.call_hook("after_train_step", "EMAHook")
    alg.it += 1
    return alg.log_dict
