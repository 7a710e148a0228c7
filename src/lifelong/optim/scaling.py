"""How the learning rate moves with the batch size."""

from __future__ import annotations

import math

from lifelong.errors import ConfigError

RULES = ("none", "linear", "sqrt")


def scale_lr(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """The learning rate for ``batch_size`` given ``base_lr`` tuned at ``base_batch_size``.

    ``linear``: lr * B / B0 (Goyal et al. 2017; SGD and LARS). ``sqrt``: lr * sqrt(B / B0) (Adam family
    and LAMB; "Learning Rates as a Function of Batch Size", Granziol et al. 2022). ``none``: unchanged.
    """
    if rule not in RULES:
        raise ConfigError(f"optim.lr_scaling must be one of {list(RULES)}, got {rule!r}")
    ratio = batch_size / base_batch_size
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    return base_lr
