"""Task-specific normalization: per task, only the normalization layers' affine parameters (and the head)
train, the rest of the network stays frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from lifelong.errors import ConfigError
from lifelong.strategies.base import OWN_TENSORS_FREEZE, Capabilities
from lifelong.strategies.task_params import FrozenAnchor, head_names, norm_names


@dataclass
class BNOnly(FrozenAnchor):
    """Training BatchNorm and only BatchNorm (Frankle, Schwab & Morcos, ICLR 2021): a network whose
    weights stay at their random initial values reaches far-above-chance accuracy when only the
    normalization layers' affine parameters (gamma, beta) and the output layer train. Applied per task,
    as the continual-learning work on task-specific normalization does: every task keeps its own copy of
    each normalization layer's affine parameters *and* running statistics, and its own head, selected by
    the task id of each sample; the shared weights never change after the first experience, so no task
    forgets (the stream must give task ids, the runner refuses one that does not).

    Frozen values: by default (``train_first = False``) the weights stay at their initial (random, or
    loaded) values, as in the paper; with ``train_first`` the first experience trains the whole network
    and its weights are then frozen (a first-task anchor, as in CLR). A new task's normalization layers
    and head start as copies of the first task's.

    Departures: any normalization layer of the backbone counts (BatchNorm, GroupNorm, LayerNorm, the
    library's BCN and AdaB2N), not only BatchNorm; a model without one is refused. The head is one
    linear layer over all classes per task, masked to the task's classes.

    Extra parameters per task (:meth:`extra_parameters` sums them over the tasks): the affine parameters
    and running statistics of every normalization layer, plus the head's weight and bias."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(task_ids=True, freeze=False, freeze_refusal=OWN_TENSORS_FREEZE)

    train_first: bool = False

    def per_task_names(self, model: nn.Module) -> list[str]:
        names = norm_names(model)
        if not names:
            raise ConfigError("strategy 'bn_only' trains the backbone's normalization layers and this model has "
                              "none; build it with model.norm = 'batch' (or another norm)")
        return names + head_names(model)
