"""Optimizers by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lifelong.errors import ConfigError


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float,
                    momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """A torch optimizer: ``sgd`` (with optional momentum), ``adam`` or ``adamw``; ``params`` as torch
    takes them (parameters or groups; extra group keys such as ``lr_scale`` are kept)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"optim.name must be one of {sorted(OPTIMIZERS)}, got {name!r}")


OPTIMIZERS = ("sgd", "adam", "adamw")
