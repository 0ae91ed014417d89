"""Learners by name: each method registers a builder and its typed config class.

``fewshot train --method NAME --option KEY=VALUE`` and :func:`build_learner` go through here, so
options are checked against the method's config class (:mod:`episodes.options`) before anything is
built, and a spec's options are stored converted and complete (:func:`make_spec`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from episodes.options import config_dict, parse_config

from .input_norm import Normalize, channels_taken, check_normalize
from .learner import EpisodicLearner, ModelSpec


@dataclass(frozen=True)
class Method:
    """A registered learner: its name, its config dataclass and ``build(spec, config)``."""

    name: str
    config: type
    build: Callable[[ModelSpec, Any], EpisodicLearner]


METHODS: dict[str, Method] = {}


def register(name: str, config: type) -> Callable:
    """Decorator registering ``builder(spec, config) -> EpisodicLearner`` under ``name``, with
    ``config`` the dataclass of its options."""
    def wrap(builder: Callable[[ModelSpec, Any], EpisodicLearner]) -> Callable:
        METHODS[name] = Method(name, config, builder)
        return builder
    return wrap


def get_method(name: str) -> Method:
    """The registered method ``name``, or a ValueError listing the methods."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_config(name: str, options: Mapping[str, Any]) -> Any:
    """The typed config of method ``name`` from ``options`` (text values are converted)."""
    return parse_config(get_method(name).config, options, name)


def make_spec(method: str, backbone: str, in_channels: int, image_size: int,
              options: Mapping[str, Any] | None = None, normalize: Normalize = None
              ) -> ModelSpec:
    """A spec whose options are checked, converted and complete (every field of the config), so
    that two specs of the same model compare equal however their options were written;
    ``normalize``: the input normalisation (:func:`fewshot.input_norm.resolve_normalize`)."""
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
                           f"normalisation: build its backbone with fewshot.backbones.spec_backbone")
    return learner
