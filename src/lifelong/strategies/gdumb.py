"""GDumb: a greedy class-balanced memory and a model retrained from scratch on it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.strategies.base import (
    Capabilities,
    ExperiencePlan,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.memory import (
    ClassBalancedBuffer,
    MemoryKeeps,
    check_memory_keeps,
    memory_source,
)


@dataclass
class GDumb(Strategy):
    """GDumb (Prabhu et al., ECCV 2020, "GDumb: A Simple Approach that Questions Our Progress in
    Continual Learning"): the stream only fills a greedy class-balanced memory; at each experience the
    model is reset to its initial weights and trained from scratch on the memory alone. The paper
    trains on the memory for many epochs; ``memory_passes`` repeats the memory within each of the
    runner's epochs to the same end. Retraining from scratch restarts the optimizer state too, whether
    or not ``optim.reset_per_experience`` is set.

    Data-parallel: every rank fills the same memory from the whole experience with the draws every
    rank makes alike, so the memory the runner shards over the ranks is one memory."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        distributed=True,
        averaging=frozenset(),
        averaging_refusal="retrains the model from its initial weights at each experience",
    )

    buffer_size: Annotated[int, Ge(1)] = 200
    """Total number of samples kept (not per class; the same memory on every data-parallel rank)."""
    memory_passes: Annotated[int, Ge(1)] = 5
    """Copies of the memory in one training epoch (the runner's epochs multiply it)."""
    memory_keeps: MemoryKeeps = "samples"
    memory: ClassBalancedBuffer = field(init=False, repr=False)
    initial_weights: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    current_offered: bool = field(default=False, init=False, repr=False)
    """Whether the experience in progress was offered to the memory (a checkpoint taken inside it was)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_keeps(self.memory_keeps)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        source = memory_source(self.memory_keeps, context.stream)
        self.memory = ClassBalancedBuffer(self.buffer_size, self.generator, source)
        self.initial_weights = {}
        self.current_offered = False

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """The memory holds every sample offered until it is full, then stays full: after experiences
        ``0..index`` it holds ``min(buffer_size, samples offered)``, repeated ``memory_passes`` times;
        the model restarts, so the optimizer state does too."""
        offered = sum(len(e.train) for e in experiences[: index + 1])
        return ExperiencePlan(train_size=min(self.buffer_size, offered) * self.memory_passes, reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Reset the model to the weights it had before the first experience (retraining from scratch)."""
        if not self.initial_weights:
            self.initial_weights = copy.deepcopy(model.state_dict())
        model.load_state_dict(self.initial_weights)

    def training_set(self, experience: Experience) -> TensorSet:
        """Offer the experience to the memory in a random order, then train on the memory only."""
        if not self.current_offered:  # a run resumed inside the experience must not offer it twice
            order = torch.randperm(len(experience.train), generator=self.generator)
            arrived = experience.train.subset(order)
            self.memory.add(x=arrived.x, y=arrived.y, task=arrived.task)
            self.current_offered = True
        memory = self.memory.contents()
        kept = TensorSet(memory["x"], memory["y"], memory["task"])
        return TensorSet.concat([kept] * self.memory_passes)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.current_offered = False

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict(), "initial_weights": self.initial_weights,
                "current_offered": self.current_offered}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
        self.initial_weights = dict(state["initial_weights"])
        self.current_offered = bool(state["current_offered"])
