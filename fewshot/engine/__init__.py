"""The engine: the one training loop, evaluation and prediction, checkpoints and run folders, and
what they run on (memory budgets, episodes per step, precision, several processes)."""

from ..values import parse_bytes
from .calibrate import Calibration, calibrate_checkpoint, set_temperature
from .checkpoint import (
    CheckpointFile,
    check_pipeline,
    load_backbone_weights,
    load_checkpoint,
    load_learner,
    recorded_pipeline,
    restore_model,
    save_checkpoint,
)
from .curves import plot_curves, read_metrics
from .distributed import GradientSync, local_device
from .evaluate import evaluate, paired_test, query_logits
from .features import extract_features
from .logs import TrainLog
from .memory import chunks, memory_budget
from .precision import autocast, resolve_precision
from .predict import Prediction, predict
from .results import EvalResult, confidence_interval
from .runs import RunError, open_run, read_run
from .step_size import auto_episodes
from .streams import shard_sampler
from .train import TrainConfig, TrainResult, make_optimizer, train

__all__ = [
    "Calibration", "CheckpointFile", "EvalResult", "GradientSync", "Prediction", "RunError", "TrainConfig",
    "TrainLog", "TrainResult", "auto_episodes", "autocast", "calibrate_checkpoint", "check_pipeline",
    "chunks",
    "confidence_interval", "evaluate", "extract_features", "load_backbone_weights",
    "load_checkpoint", "load_learner", "local_device", "make_optimizer", "memory_budget",
    "open_run", "paired_test", "parse_bytes", "plot_curves", "predict", "query_logits",
    "read_metrics", "read_run", "recorded_pipeline", "resolve_precision", "restore_model",
    "save_checkpoint", "set_temperature", "shard_sampler", "train",
]
