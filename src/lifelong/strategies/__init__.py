"""Continual-learning strategies and their registry.

Adding a method: one file with a :class:`Strategy` subclass (a dataclass whose fields are its
hyperparameters), one line in :data:`STRATEGIES`, one test file.
"""

from lifelong.strategies.base import Strategy
from lifelong.strategies.cumulative import Cumulative
from lifelong.strategies.er import ER
from lifelong.strategies.ewc import EWC
from lifelong.strategies.joint import Joint
from lifelong.strategies.lwf import LwF
from lifelong.strategies.naive import Naive

STRATEGIES: dict[str, type[Strategy]] = {
    "naive": Naive,
    "joint": Joint,
    "cumulative": Cumulative,
    "er": ER,
    "ewc": EWC,
    "lwf": LwF,
}

__all__ = ["STRATEGIES", "ER", "EWC", "Cumulative", "Joint", "LwF", "Naive", "Strategy"]
