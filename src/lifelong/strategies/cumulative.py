"""Cumulative training: retrain on everything seen so far."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.strategies.base import Strategy


@dataclass
class Cumulative(Strategy):
    """At experience i, train on the union of experiences 0..i: the costly incremental upper bound
    (used as a reference in e.g. Lomonaco et al. 2021, Avalanche). Memory grows with the stream."""

    seen: list[TensorSet] = field(default_factory=list, init=False, repr=False)

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.seen = []

    def training_set(self, experience: Experience) -> TensorSet:
        self.seen.append(experience.train)
        return TensorSet.concat(self.seen)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def memory_size(self) -> int:
        return sum(len(s) for s in self.seen[:-1])
