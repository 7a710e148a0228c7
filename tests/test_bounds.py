"""Declared bounds: one range on a field, the same one-line error from Python and from a configuration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lifelong.bounds import Annotated, Ge, Gt, Interval, Le, bounds_of, check_bounds, describe
from lifelong.errors import ConfigError


@dataclass
class Settings:
    size: Annotated[int, Ge(0)] = 1
    rate: Annotated[float, Gt(0), Le(1)] = 0.5
    share: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    name: str = "x"

    def __post_init__(self) -> None:
        check_bounds("strategy", self)


def test_ranges_are_described_from_the_annotation() -> None:
    assert describe(Annotated[int, Ge(0)]) == ">= 0"
    assert describe(Annotated[float, Gt(0), Le(1)]) == "> 0 and <= 1"
    assert describe(Annotated[float, Interval(ge=0, lt=1)]) == ">= 0 and < 1"
    assert describe(int) == "" and bounds_of(str) == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("size", -1, "strategy.size must be >= 0, got -1"),
    ("rate", 0.0, "strategy.rate must be > 0 and <= 1, got 0.0"),
    ("rate", 1.5, "strategy.rate must be > 0 and <= 1, got 1.5"),
    ("share", 1.0, "strategy.share must be >= 0 and < 1, got 1.0"),
    ("rate", float("nan"), "strategy.rate must be > 0 and <= 1, got nan"),
    ("size", True, "strategy.size must be >= 0, got True"),
])
def test_a_value_outside_its_range_is_refused_in_one_line(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings(**{field: value})
    assert str(error.value) == message


def test_values_on_the_edges_of_their_ranges_pass() -> None:
    Settings(size=0, rate=1.0, share=0.0)


def test_a_strategy_field_out_of_range_gives_the_same_error_from_python_and_a_configuration() -> None:
    from lifelong.config import Component, build
    from lifelong.strategies import STRATEGIES

    with pytest.raises(ConfigError) as from_python:
        STRATEGIES["er"](buffer_size=-1)
    with pytest.raises(ConfigError) as from_config:
        build("strategy", STRATEGIES, Component(name="er", buffer_size=-1))
    assert str(from_python.value) == str(from_config.value)
    assert "\n" not in str(from_python.value) and "buffer_size" in str(from_python.value)


def test_a_range_whose_ends_are_swapped_is_refused_naming_both_fields() -> None:
    import pytest

    from lifelong.bounds import check_ordered
    from lifelong.errors import ConfigError
    from lifelong.strategies import STRATEGIES

    with pytest.raises(ConfigError, match=r"^strategy.mixup_min \(0.7\) must not exceed strategy.mixup_max \(0.6\); "
                                          r"swap them$"):
        STRATEGIES["onpro"](mixup_min=0.7, mixup_max=0.6)
    with pytest.raises(ConfigError, match=r"strategy.gradient_scale_min \(2.0\) must not exceed"):
        STRATEGIES["hpcr"](gradient_scale_min=2.0, gradient_scale_max=1.0)
    check_ordered("strategy", STRATEGIES["onpro"](mixup_min=0.6, mixup_max=0.6), "mixup_min", "mixup_max")
