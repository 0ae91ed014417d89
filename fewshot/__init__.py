"""fewshot: the learning side. Backbones, few-shot learners, the meta-training loop, evaluation
and the command line. Data comes from the ``episodes`` package."""

# the built-in methods register themselves (fewshot.registry) when their packages are imported
from . import methods, ssl  # noqa: F401
from .backbones import Conv4, ResNet12, make_backbone
from .checkpoint import load_learner, save_checkpoint
from .evaluate import EvalResult, confidence_interval, evaluate, paired_test
from .functional import protonet_logits, prototypes
from .heads import HeadLearner, head_config
from .heads.scoring import evaluate_head
from .learner import EpisodicLearner, ModelSpec
from .methods.protonet import ProtoNet
from .registry import build_learner, make_spec, method_config, register
from .train import TrainConfig, TrainResult, train

__all__ = [
    "Conv4", "EpisodicLearner", "EvalResult", "HeadLearner", "ModelSpec", "ProtoNet", "ResNet12",
    "TrainConfig", "TrainResult", "build_learner", "confidence_interval", "evaluate",
    "evaluate_head", "head_config", "load_learner", "make_backbone", "make_spec", "method_config",
    "paired_test", "protonet_logits", "prototypes", "register", "save_checkpoint", "train",
]
