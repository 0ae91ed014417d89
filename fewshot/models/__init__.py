"""The model side: the learner interface and its spec, backbones (built in and from torchvision or
timm), input normalisation, per-episode BatchNorm, and fitting stored weights to a backbone."""

from .backbones import Conv4, ResNet12, feature_dim, feature_shape, make_backbone, spec_backbone
from .episode_norm import PerEpisodeNorm, deferred_running_stats
from .input_norm import add_input_norm, describe_normalize, parse_normalize, resolve_normalize
from .learner import BackboneLearner, EpisodicLearner, ModelSpec, embed_episode
from .weights import backbone_of, backbone_state, check_fits, fit_backbone, plain_state_dict
from .zoo import external_backbone, freeze, select_parameters

__all__ = [
    "BackboneLearner", "Conv4", "EpisodicLearner", "ModelSpec", "PerEpisodeNorm", "ResNet12",
    "add_input_norm", "backbone_of", "backbone_state", "check_fits", "deferred_running_stats",
    "describe_normalize", "embed_episode", "external_backbone", "feature_dim", "feature_shape",
    "fit_backbone", "freeze", "make_backbone", "parse_normalize", "plain_state_dict",
    "resolve_normalize", "select_parameters", "spec_backbone",
]
