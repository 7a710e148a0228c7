"""Strategies compose the mechanics they share (parts they hold) instead of inheriting them: every
registered strategy subclasses ``Strategy`` directly, and none subclasses another registered one."""

from __future__ import annotations

import pytest

from lifelong.strategies import STRATEGIES, Strategy


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_registered_strategy_is_one_level_below_strategy(name: str) -> None:
    cls = STRATEGIES[name]
    assert cls.__bases__ == (Strategy,), f"{name}: {cls.__name__} extends {[b.__name__ for b in cls.__bases__]}"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_registered_strategy_subclasses_another(name: str) -> None:
    cls = STRATEGIES[name]
    others = {other for other in STRATEGIES.values() if other is not cls}
    assert not [other.__name__ for other in others if issubclass(cls, other)]
