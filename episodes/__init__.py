"""episodes: the data side of fewshot. Class-split datasets, the N-way K-shot sampler, fixed
evaluation episodes. Knows nothing of models."""

from .augment import AugmentConfig, EpisodeAugment, augment_images
from .batches import ImageBatchSampler, LabelledBatch
from .dataset import ClassDataset, TensorClassDataset
from .episode import Episode
from .folder import image_folder, ratio_split, read_split_file, scan_class_folders
from .images import ImageFileError, decode_image, decode_images
from .labelled import hold_out, labelled_index, labelled_subset, subset_items, unlabelled_pool
from .natural import AnnotationError, cub, mini_imagenet, stanford_dogs
from .omniglot import omniglot
from .pipeline import ImagePipeline, read_image, read_images, to_unit_float
from .randaugment import StrongAugment, strong_augment
from .sampler import EpisodeSampler, FixedEpisodes, check_episode_shape
from .semisup import SemiSupervisedBatch, SemiSupervisedSampler
from .sine import SineTasks, sine_episode
from .synthetic import stroke_characters
from .views import VIEW_PRESETS, ViewBatch, view_configs

__all__ = [
    "AnnotationError", "AugmentConfig", "EpisodeAugment", "augment_images", "cub",
    "mini_imagenet", "stanford_dogs",
    "ClassDataset", "Episode", "EpisodeSampler", "FixedEpisodes", "ImageBatchSampler", "ImageFileError",
    "LabelledBatch",
    "ImagePipeline", "read_image", "read_images", "to_unit_float",
    "SineTasks", "TensorClassDataset", "check_episode_shape", "decode_image", "decode_images", "image_folder",
    "omniglot", "ratio_split", "read_split_file", "scan_class_folders", "sine_episode", "stroke_characters",
    "VIEW_PRESETS", "ViewBatch", "view_configs",
    "SemiSupervisedBatch", "SemiSupervisedSampler", "StrongAugment", "hold_out", "labelled_index",
    "labelled_subset", "strong_augment", "subset_items", "unlabelled_pool",
]
