"""fewshot: the learning side. Backbones, few-shot learners, the meta-training loop, evaluation
and the command line. Data comes from the ``episodes`` package."""

# the built-in methods register themselves (fewshot.registry) when their packages are imported
from . import methods, ssl  # noqa: F401
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

__all__ = [
    "Conv4", "EpisodicLearner", "EvalResult", "FewShotClassifier", "HeadLearner", "ModelSpec",
    "Prediction", "ProtoNet",
    "ResNet12", "TrainConfig", "TrainResult", "backbone_of", "build_learner",
    "confidence_interval", "evaluate", "evaluate_head", "expected_calibration_error",
    "fit_temperature", "head_config", "load_learner",
    "make_backbone", "make_spec", "method_config", "paired_test", "predict", "protonet_logits",
    "prototypes", "recorded_pipeline", "register", "save_checkpoint", "train",
]
