"""Learners by name: each method registers its builder, its typed config class, its kind and a
one-line summary (:class:`episodes.registry.Registry`, entry-point group ``fewshot.methods``).

``fewshot train --method NAME --option KEY=VALUE`` and :func:`build_learner` go through here, so
options are checked against the method's config class (:mod:`episodes.options`) before anything is
built, and a spec's options are stored converted and complete (:func:`make_spec`). The command
line's ``--method`` choices and help, and the README's and the docs' tables (``docs/tables.py``),
are generated from the entries.

Config fields that the data fills are declared on the field (:func:`data_field`): MAML's
``n_way`` from the episodes' way, a classifier's ``num_classes`` from the training classes,
DeepCluster's ``num_images`` from the training images. :func:`fill_from_data` sets them, and
refuses a value the user gave for one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Literal

from episodes.options import config_dict, parse_config
from episodes.registry import Entry, Registry

from .models.input_norm import Normalize, channels_taken, check_normalize
from .models.learner import EpisodicLearner, ModelSpec

Kind = Literal["episodic", "supervised", "self-supervised", "semi-supervised"]
KINDS: dict[str, str] = {"episodic": "meta-trained on episodes (fewshot train)",
                         "supervised": "pre-trained on labelled mini-batches (fewshot pretrain)",
                         "self-supervised": "pre-trained on images without labels "
                                            "(fewshot pretrain)",
                         "semi-supervised": "pre-trained on a few labels per class and the "
                                            "unlabelled rest (fewshot pretrain)"}
DATA = {"way": "--way (the classes of an episode)", "classes": "the training split's classes",
        "images": "the training split's images"}
# the built-in methods register themselves when their packages are imported: on the first lookup
METHODS = Registry("method", "fewshot.methods", builtin=("fewshot.methods", "fewshot.ssl", "fewshot.semisup"))
Method = Entry


def register(name: str, config: type, kind: Kind = "episodic", summary: str = "") -> Callable:
    """Decorator registering ``builder(spec, config) -> EpisodicLearner`` under ``name``, with
    ``config`` the dataclass of its options, its ``kind`` (:data:`KINDS`) and a one-line
    ``summary``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return METHODS.register(name, config, kind, summary)


def data_field(source: Literal["way", "classes", "images"], default: Any = None) -> Any:
    """A config field the data fills (:data:`DATA`), by :func:`fill_from_data`."""
    return dataclasses.field(default=default, metadata={"from_data": source})


def data_fields(name: str) -> dict[str, str]:
    """Field -> what fills it (``way``, ``classes``, ``images``) of method ``name``'s config."""
    return {f.name: f.metadata["from_data"] for f in dataclasses.fields(get_method(name).config)
            if "from_data" in f.metadata}


def fill_from_data(name: str, options: Mapping[str, Any], **values: int) -> dict[str, Any]:
    """``options`` with the data-filled fields of ``name`` set from ``values`` (``way=``,
    ``classes=``, ``images=``; a field whose value is not given keeps its default).

    Raises:
        ValueError: an option that the data fills was given.
    """
    filled = data_fields(name)
    given = sorted(set(options) & set(filled))
    if given:
        raise ValueError(f"option {given[0]} of {name} is set from {DATA[filled[given[0]]]}: "
                         f"leave it out")
    return {**options, **{k: values[src] for k, src in filled.items() if src in values}}


def require_data(config: Any, *names: str) -> None:
    """Raise ``ValueError`` if a data-filled field of ``config`` was not filled (a builder's
    check: :func:`fill_from_data` sets them from the data)."""
    for name in names:
        if getattr(config, name) is None:
            raise ValueError(f"option {name} is set from the data: fill it with "
                             f"fewshot.registry.fill_from_data (the command line does)")


def get_method(name: str) -> Method:
    """The registered method ``name``, or a ValueError listing the methods."""
    return METHODS.get(name)


def method_names(kind: Kind | None = None) -> list[str]:
    """The registered methods (of ``kind``)."""
    return METHODS.names(kind)


def method_config(name: str, options: Mapping[str, Any]) -> Any:
    """The typed config of method ``name`` from ``options`` (text values are converted)."""
    return parse_config(get_method(name).config, options, name)


def make_spec(method: str, backbone: str, in_channels: int, image_size: int,
              options: Mapping[str, Any] | None = None, normalize: Normalize = None
              ) -> ModelSpec:
    """A spec whose options are checked, converted and complete (every field of the config), so
    that two specs of the same model compare equal however their options were written;
    ``normalize``: the input normalisation (:func:`fewshot.models.input_norm.resolve_normalize`)."""
    return ModelSpec(method, backbone, in_channels, image_size,
                     config_dict(method_config(method, options or {})),
                     None if normalize is None else check_normalize(
                         normalize, channels_taken(backbone, in_channels), "spec normalize"))


def canonical(spec: ModelSpec | Mapping[str, Any]) -> ModelSpec:
    """``spec`` (or its dict) with its options checked, converted and complete."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec(**spec)
    return make_spec(spec.method, spec.backbone, spec.in_channels, spec.image_size, spec.options,
                     spec.normalize)


def stored_spec(spec: ModelSpec | Mapping[str, Any]) -> ModelSpec:
    """A spec read back from a checkpoint or a run record, :func:`canonical`; an option it
    lacks because it was written before the option existed takes the value that reproduces the
    model it describes (the method config's ``BEFORE``), not the option's default."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec(**spec)
    before = getattr(get_method(spec.method).config, "BEFORE", {})
    return canonical(replace(spec, options={**before, **spec.options}))


def build_learner(spec: ModelSpec) -> EpisodicLearner:
    """Build the learner a spec describes (untrained), its backbone normalising its input as
    ``spec.normalize`` says."""
    method = get_method(spec.method)
    learner = method.build(spec, parse_config(method.config, spec.options, spec.method))
    if spec.normalize is not None and not hasattr(getattr(learner, "backbone", None), "input_mean"):
        raise RuntimeError(f"the builder of {spec.method} did not apply the spec's input "
                           f"normalisation: build its backbone with fewshot.models.backbones.spec_backbone")
    return learner
