"""fewshot: the learning side. Backbones, few-shot learners, the meta-training loop, evaluation
and the command line. Data comes from the ``episodes`` package.

The names below are imported on first use (PEP 562 ``__getattr__``), so that importing
``fewshot.cli`` or ``fewshot.version`` (``fewshot --help``, ``fewshot --version``) does not
import torch; the built-in methods register themselves when the method registry is first looked
up (:data:`fewshot.registry.METHODS`)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each is imported on first use
    from .api import FewShotClassifier
    from .calibration import expected_calibration_error, fit_temperature
    from .engine import (
        EvalResult,
        Prediction,
        TrainConfig,
        TrainResult,
        confidence_interval,
        evaluate,
        load_learner,
        paired_test,
        predict,
        recorded_pipeline,
        save_checkpoint,
        train,
    )
    from .functional import protonet_logits, prototypes
    from .heads import HeadLearner, head_config
    from .heads.scoring import evaluate_head
    from .methods.protonet import ProtoNet
    from .models import Conv4, EpisodicLearner, ModelSpec, ResNet12, backbone_of, make_backbone
    from .registry import build_learner, make_spec, method_config, register

# public name -> the module that defines it (the imports above)
_EXPORTS = {
    "FewShotClassifier": ".api",
    "expected_calibration_error": ".calibration", "fit_temperature": ".calibration",
    "EvalResult": ".engine", "Prediction": ".engine", "TrainConfig": ".engine",
    "TrainResult": ".engine", "confidence_interval": ".engine", "evaluate": ".engine",
    "load_learner": ".engine", "paired_test": ".engine", "predict": ".engine",
    "recorded_pipeline": ".engine", "save_checkpoint": ".engine", "train": ".engine",
    "protonet_logits": ".functional", "prototypes": ".functional",
    "HeadLearner": ".heads", "head_config": ".heads", "evaluate_head": ".heads.scoring",
    "ProtoNet": ".methods.protonet",
    "Conv4": ".models", "EpisodicLearner": ".models", "ModelSpec": ".models",
    "ResNet12": ".models", "backbone_of": ".models", "make_backbone": ".models",
    "build_learner": ".registry", "make_spec": ".registry", "method_config": ".registry",
    "register": ".registry",
}

__all__ = [
    "__version__",
    "Conv4", "EpisodicLearner", "EvalResult", "FewShotClassifier", "HeadLearner", "ModelSpec",
    "Prediction", "ProtoNet",
    "ResNet12", "TrainConfig", "TrainResult", "backbone_of", "build_learner",
    "confidence_interval", "evaluate", "evaluate_head", "expected_calibration_error",
    "fit_temperature", "head_config", "load_learner",
    "make_backbone", "make_spec", "method_config", "paired_test", "predict", "protonet_logits",
    "prototypes", "recorded_pipeline", "register", "save_checkpoint", "train",
]


def __getattr__(name: str) -> Any:
    """``fewshot.NAME``: imported from its module on first use (PEP 562), then kept."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fewshot' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
