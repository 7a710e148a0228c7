"""The settings every optimizer of ``optim/`` checks in its ``__init__``, with one error wording: the field
under ``optim`` (or ``optim.optimizer_params``), the value and the allowed range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lifelong.errors import ConfigError


def check_common(lr: float, weight_decay: float, momentum: float | None = None) -> None:
    """``lr > 0``, ``weight_decay >= 0`` and, for an optimizer with one, ``0 <= momentum < 1``."""
    if not lr > 0:
        raise ConfigError(f"optim.lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ConfigError(f"optim.weight_decay must be >= 0, got {weight_decay!r}")
    if momentum is not None and not 0 <= momentum < 1:
        raise ConfigError(f"optim.momentum must be in [0, 1), got {momentum!r}")


def check_betas(betas: Any) -> tuple[float, float]:
    """Adam-style moment decays: two numbers in [0, 1), returned as a tuple."""
    if not isinstance(betas, Sequence) or len(betas) != 2 \
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.optimizer_params.betas must be two numbers in [0, 1), got {betas!r}")
    return float(betas[0]), float(betas[1])


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """An optimizer's own setting ``optim.optimizer_params.<name>``: > 0 (or >= 0 with ``allow_zero``)."""
    if not (value >= 0 if allow_zero else value > 0):
        raise ConfigError(f"optim.optimizer_params.{name} must be {'>=' if allow_zero else '>'} 0, got {value!r}")
