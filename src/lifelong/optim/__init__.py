"""Optimization: optimizers, learning-rate schedules and batch-size scaling rules."""

from lifelong.optim.registry import OPTIMIZERS, build_optimizer
from lifelong.optim.scaling import scale_lr
from lifelong.optim.schedules import SCHEDULES, Position

__all__ = ["OPTIMIZERS", "SCHEDULES", "Position", "build_optimizer", "scale_lr"]
