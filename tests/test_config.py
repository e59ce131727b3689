"""Parameter validation messages and ``--set`` parsing."""

from __future__ import annotations

import attrs
import pytest

from adcore.config import build, in_range, parse_assignments, positive_int, strides
from adcore.errors import ConfigError


@attrs.define(kw_only=True)
class ToyConfig:
    ratio: float = attrs.field(default=0.1, validator=in_range(0, 1, low_open=True))
    steps: int = attrs.field(default=3, validator=positive_int)
    layers: tuple[int, ...] = attrs.field(default=(8, 16), validator=strides())
    name: str | None = None
    flag: bool = False


def test_message_is_one_sklearn_style_sentence():
    with pytest.raises(ConfigError) as info:
        ToyConfig(ratio=0.0)
    assert str(info.value) == "The 'ratio' parameter of Toy must be in (0, 1]. Got 0.0 instead."


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Toy has no parameter 'ratoi'; parameters: ratio, steps"):
        build(ToyConfig, {"ratoi": 1})


def test_assignments_are_typed_by_field():
    values = parse_assignments(ToyConfig, {"ratio": "0.5", "steps": "7", "layers": "4,8", "name": "none",
                                           "flag": "yes"})
    assert values == {"ratio": 0.5, "steps": 7, "layers": (4, 8), "name": None, "flag": True}
    assert build(ToyConfig, values).layers == (4, 8)


def test_bad_assignment_value_names_key_and_type():
    with pytest.raises(ConfigError, match="The 'steps' parameter of Toy must be int. Got 'many' instead."):
        parse_assignments(ToyConfig, {"steps": "many"})


def test_strides_must_increase():
    with pytest.raises(ConfigError, match="'layers'"):
        ToyConfig(layers=(16, 8))
