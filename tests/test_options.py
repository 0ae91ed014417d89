"""Typed method options: names and values checked when parsed, errors naming the option and the
valid choices, specs equal however their options were written."""

from __future__ import annotations

import pytest

from episodes import AugmentConfig
from episodes.options import parse_config, parse_values
from fewshot import make_spec, method_config
from fewshot.registry import canonical


@pytest.mark.parametrize("method, options, message", [
    ("protonet", {"foo": "1"}, "unknown protonet option.*foo.*distance"),
    ("protonet", {"distance": "manhattan"}, "distance must be one of euclidean, cosine"),
    ("maml", {"inner_lr": "fast"}, "option inner_lr must be a number, got 'fast'"),
    ("maml", {"inner_steps": "-1"}, "option inner_steps must be >= 0"),
    ("maml", {"inner_steps": "1.5"}, "option inner_steps must be a whole number"),
    ("maml", {"first_order": "maybe"}, "option first_order must be true or false"),
    ("maml", {"bn": "batch"}, "bn must be one of transductive, per_step"),
    ("relation", {"hidden": "-3"}, "option hidden must be >= 1"),
    ("matching", {"fce_steps": "-1"}, "option fce_steps must be >= 0"),
    ("protonet", {"hidden": "0"}, "option hidden must be >= 1"),
    ("matching", {"hidden": "-2"}, "option hidden must be >= 1"),
    ("nosuch", {}, "unknown method 'nosuch': choose one of .*protonet"),
])
def test_bad_options_name_the_option_and_the_choices(method, options, message):
    with pytest.raises(ValueError, match=message):
        method_config(method, options)


def test_values_are_converted_and_specs_compare_after_conversion():
    config = method_config("maml", {"first_order": "true", "inner_lr": "0.1", "chunk_size": "none",
                                    "vmap": "off"})
    assert (config.first_order, config.inner_lr, config.chunk_size, config.vmap) == (
        True, 0.1, None, False)
    a = make_spec("maml", "conv4", 1, 28, {"first_order": "true"})
    b = make_spec("maml", "conv4", 1, 28, {"first_order": True, "inner_lr": 0.4})
    assert a == b and a.options["inner_steps"] == 1  # complete: defaults recorded
    assert canonical(a.to_dict()) == canonical({"method": "maml", "options": {"first_order": 1},
                                                "in_channels": 1, "image_size": 28})


def test_tuple_and_augmentation_options():
    values = parse_values(AugmentConfig, {"zoom": "0.8,1.2", "rotate": "15"}, "augmentation")
    assert values == {"zoom": (0.8, 1.2), "rotate": 15.0}
    with pytest.raises(ValueError, match="unknown augmentation option.*rotation.*rotate"):
        parse_values(AugmentConfig, {"rotation": "1"}, "augmentation")
    with pytest.raises(ValueError, match="option fill must be one of"):
        parse_config(AugmentConfig, {"fill": "mirror"}, "augmentation")
    with pytest.raises(ValueError, match="option hflip must be a probability"):
        parse_config(AugmentConfig, {"hflip": "2"}, "augmentation")


@pytest.mark.parametrize("method", ["protonet", "matching", "maml"])
def test_hidden_sets_the_conv4_width_and_is_refused_for_other_backbones(method):
    from fewshot import build_learner

    learner = build_learner(make_spec(method, "conv4", 1, 28, {"hidden": 8}))
    convs = [m for m in learner.modules() if m.__class__.__name__ == "Conv2d"]
    assert convs and {c.out_channels for c in convs} == {8}
    with pytest.raises(ValueError, match="hidden .*applies to backbone conv4, not 'resnet12'"):
        build_learner(make_spec(method, "resnet12", 3, 84, {"hidden": 8}))
