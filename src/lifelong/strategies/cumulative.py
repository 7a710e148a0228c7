"""Cumulative training: retrain on everything seen so far."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.strategies.base import (
    BOTH_OBJECTIVES,
    Capabilities,
    ExperiencePlan,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.memory import row_bytes


@dataclass
class Cumulative(Strategy):
    """At experience i, train on the union of experiences 0..i: the costly incremental upper bound
    (used as a reference in e.g. Lomonaco et al. 2021, Avalanche). Memory grows with the stream."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True, sharding=True)

    seen: list[TensorSet] = field(default_factory=list, init=False, repr=False)
    current_added: bool = field(default=False, init=False, repr=False)
    """Whether ``seen`` already holds the experience in progress (a checkpoint taken inside it does)."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.seen = []
        self.current_added = False

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Experience ``index`` trains on experiences ``0..index`` together."""
        return ExperiencePlan(train_size=sum(len(e.train) for e in experiences[: index + 1]))

    def training_set(self, experience: Experience) -> TensorSet:
        if not self.current_added:  # a run resumed inside the experience must not add it twice
            self.seen.append(experience.train)
            self.current_added = True
        return TensorSet.concat(self.seen)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.current_added = False

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)

    def memory_size(self) -> int:
        return sum(len(s) for s in self.seen[:-1])

    def memory_bytes(self) -> int:
        """The earlier experiences' samples it trains on again: they are the stream's tensors, not copies, but
        they are a memory all the same (what a replay method would keep to do this), so they are counted as
        such, a lazy set's inputs as their positions (8 bytes a sample)."""
        return sum(len(kept) * (row_bytes({"y": kept.y, "task": kept.task}) +
                                (8 if kept.lazy else row_bytes({"x": kept.x}))) for kept in self.seen[:-1])

    def state_dict(self) -> dict[str, Any]:
        """The number of experiences seen: their data is the stream's, so a checkpoint need not copy it."""
        return {**super().state_dict(), "seen_experiences": len(self.seen), "current_added": self.current_added}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.seen = [e.train for e in self.context.stream.experiences[: int(state["seen_experiences"])]]
        self.current_added = bool(state["current_added"])
