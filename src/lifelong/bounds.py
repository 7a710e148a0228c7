"""Declared bounds of hyperparameters: ranges written on the fields, read everywhere a value is checked.

A component's numeric settings carry their range in their annotation, with the ``annotated_types``
markers pydantic understands (``buffer_size: Annotated[int, Ge(0)] = 200``). The same declaration is
read by three readers, so a range is written once:

- :func:`check_bounds`, called when a component is built from Python (``ll.EWC(lam=-1)``), raises the
  one-line error naming the field, the value and the allowed range;
- the configuration layer (:func:`lifelong.config.build`) validates a configuration file's values with
  pydantic, which applies the same markers;
- ``lifelong strategies`` prints each range (:func:`describe`).

Rules that span several fields stay in the component's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval, Le, Lt

from lifelong.errors import ConfigError

__all__ = ["Annotated", "Ge", "Gt", "Interval", "Le", "Lt", "bounds_of", "check_bounds", "describe"]

Bound = Ge | Gt | Le | Lt
"""One side of a range."""


def _sides(marker: object) -> list[Bound]:
    if isinstance(marker, Ge | Gt | Le | Lt):
        return [marker]
    if isinstance(marker, Interval):
        return [side for side in (Ge(marker.ge) if marker.ge is not None else None,
                                  Gt(marker.gt) if marker.gt is not None else None,
                                  Le(marker.le) if marker.le is not None else None,
                                  Lt(marker.lt) if marker.lt is not None else None) if side is not None]
    return []


def _without_none(annotation: object) -> tuple[object, bool]:
    """``X`` of ``X | None`` (a setting that may be left off), and whether None is allowed."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def bounds_of(annotation: object) -> list[Bound]:
    """The sides of the range an annotation declares (empty for a plain type); an optional field's
    (``Annotated[float, Gt(0)] | None``) are those of its number."""
    annotation = _without_none(annotation)[0]
    if typing.get_origin(annotation) is not Annotated:
        return []
    return [side for marker in typing.get_args(annotation)[1:] for side in _sides(marker)]


def describe(annotation: object) -> str:
    """The declared range in words, e.g. ``>= 0``, ``> 0 and <= 1``; empty without one."""
    symbols = {Ge: ">=", Gt: ">", Le: "<=", Lt: "<"}
    return " and ".join(f"{symbols[type(side)]} {_value(side)}" for side in bounds_of(annotation))


def _value(side: Bound) -> object:
    for name in ("ge", "gt", "le", "lt"):
        if hasattr(side, name):
            return getattr(side, name)
    raise AssertionError(side)


def _holds(side: Bound, value: float) -> bool:
    bound = _value(side)
    assert isinstance(bound, int | float)
    if isinstance(side, Ge):
        return value >= bound
    if isinstance(side, Gt):
        return value > bound
    if isinstance(side, Le):
        return value <= bound
    return value < bound


def check_bounds(section: str, instance: object) -> None:
    """Refuse, in one line naming ``section.field``, the value and the range, an init field of the
    dataclass ``instance`` outside its declared range (or not a finite number where a range is declared).
    Ranges are declared on scalar fields only: a sequence's rule stays in ``__post_init__``."""
    hints = typing.get_type_hints(type(instance), include_extras=True)
    for field in dataclasses.fields(instance):  # type: ignore[arg-type]
        sides = bounds_of(hints.get(field.name)) if field.init else []
        if not sides:
            continue
        value: Any = getattr(instance, field.name)
        if value is None and _without_none(hints[field.name])[1]:
            continue  # an optional setting left off
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not number or not all(_holds(side, value) for side in sides):
            raise ConfigError(f"{section}.{field.name} must be {describe(hints[field.name])}, got {value!r}")


def check_ordered(section: str, instance: object, low: str, high: str) -> None:
    """Refuse, in one line naming both fields, a range whose lower end ``low`` exceeds its upper ``high``
    (e.g. a mixing weight's or a loss factor's ``*_min`` and ``*_max``): each lies in its declared bounds, their
    order is a rule between two fields."""
    low_value, high_value = getattr(instance, low), getattr(instance, high)
    if low_value > high_value:
        raise ConfigError(f"{section}.{low} ({low_value}) must not exceed {section}.{high} ({high_value}); "
                          "swap them")
