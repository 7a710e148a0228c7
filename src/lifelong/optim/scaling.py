"""How the learning rate moves with the batch size."""

from __future__ import annotations

import math

from lifelong.errors import ConfigError
from lifelong.optim.registry import SCALING_RULES, check_optimizer_name

RULES = ("none", "linear", "sqrt", "auto")


def resolve_rule(rule: str, optimizer: str) -> str:
    """``rule``, with ``auto`` replaced by the rule that suits ``optimizer`` (linear for SGD and LARS,
    sqrt for the Adam family, LAMB and AdaGradNorm)."""
    if rule not in RULES:
        raise ConfigError(f"optim.lr_scaling must be one of {list(RULES)}, got {rule!r}")
    if rule == "auto":
        check_optimizer_name(optimizer)
        return SCALING_RULES[optimizer]
    return rule


def scale_lr(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """The learning rate for ``batch_size`` given ``base_lr`` tuned at ``base_batch_size``.

    ``linear``: lr * B / B0 (Goyal et al. 2017; SGD and LARS). ``sqrt``: lr * sqrt(B / B0) (Adam family
    and LAMB; "Learning Rates as a Function of Batch Size", Granziol et al. 2022). ``none``: unchanged.
    ``auto`` is resolved by :func:`resolve_rule` first.
    """
    if rule not in RULES or rule == "auto":
        raise ConfigError(f"optim.lr_scaling must be one of {list(RULES[:3])} here (resolve 'auto' with "
                          f"resolve_rule first), got {rule!r}")
    ratio = batch_size / base_batch_size
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    return base_lr
