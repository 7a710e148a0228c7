"""Cumulative training: retrain on everything seen so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.strategies.base import Strategy


@dataclass
class Cumulative(Strategy):
    """At experience i, train on the union of experiences 0..i: the costly incremental upper bound
    (used as a reference in e.g. Lomonaco et al. 2021, Avalanche). Memory grows with the stream."""

    supports_distributed: ClassVar[bool] = True

    seen: list[TensorSet] = field(default_factory=list, init=False, repr=False)
    stream: Stream | None = field(default=None, init=False, repr=False)

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.seen = []
        self.stream = stream

    def training_set(self, experience: Experience) -> TensorSet:
        self.seen.append(experience.train)
        return TensorSet.concat(self.seen)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def memory_size(self) -> int:
        return sum(len(s) for s in self.seen[:-1])

    def state_dict(self) -> dict[str, Any]:
        """The number of experiences seen: their data is the stream's, so a checkpoint need not copy it."""
        return {**super().state_dict(), "seen_experiences": len(self.seen)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        assert self.stream is not None, "setup was not called"
        self.seen = [e.train for e in self.stream.experiences[: int(state["seen_experiences"])]]
