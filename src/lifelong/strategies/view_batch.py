"""View-batch replay: several augmented views of each replayed sample in one step, and a rest before its next replay."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    RecallSchedule,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


@dataclass
class ViewBatch(Strategy):
    """View-batch replay (Kang, Seifer, Lee & Ryu, CVPR 2025, "Do Your Best and Get Enough Rest for Continual
    Learning"; reference code github.com/hankyul2/ViewBatchModel, its ``ViewBatchReplay`` sampler).

    After Ebbinghaus' forgetting curve, a sample is remembered longer when it is relearned thoroughly and
    after a long enough rest. Experience replay (Chaudhry et al. 2019) as :class:`~lifelong.strategies.er.ER`
    does it, with the same reservoir memory and the same replayed rows per step, but a step's replayed rows
    are ``replay_batch_size // views`` stored samples, each ``views`` times, every copy augmented afresh by
    the run's replay augmentation (``[augment]`` with ``replay = true``): the view-batch. A sample learned at
    a step, replayed or new in that step's batch, then rests: it is replayed ``recall_interval`` steps later
    at the earliest (:class:`~lifelong.strategies.parts.memory.RecallSchedule`; 0, the default, rests
    ``len(memory) // (replay_batch_size // views)`` steps, the longest the memory allows, a round robin over
    it). Fewer distinct samples per step at the same compute make that interval ``views`` times longer than
    with one view, as the paper's sampler makes it ``views`` epochs. The new batch and the replayed rows are
    learned with one cross-entropy, as in ER.

    Departures from the paper: the view-batch applies to the replayed samples only (the reference's sampler
    repeats the new task's samples too, over several epochs; an online stream sees each new sample once, in
    the runner's batch); the rest is an explicit number of steps, where the reference lets it follow from
    repeating each sample in consecutive positions of an epoch's order, and a new sample rests from the step
    that trained on it; the paper's view-batch
    self-supervised loss (one-to-many divergence between the views) and its strong augmentation are left out.
    Without replay augmentation the views of a sample are the same input, and the view-batch weighs it
    ``views`` times in the step.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True, sharding=True)

    buffer_size: BufferSize = 200
    replay_batch_size: ReplayBatchSize = 0
    memory_keeps: MemoryKeeps = "samples"
    memory_budget_bytes: MemoryBudget = 0
    views: Annotated[int, Ge(1)] = 4
    """Views of each replayed sample in a step (the reference's ``--aug-repeat``, 4 in its runs)."""
    recall_interval: Annotated[int, Ge(0)] = 0
    """Steps a learned sample rests before it may be replayed again; 0: the longest the memory allows,
    ``len(memory) // (replay_batch_size // views)``."""
    memory: ReservoirMemory = field(init=False, repr=False)
    schedule: RecallSchedule = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_keeps(self.memory_keeps)
        if self.replay_batch_size and self.replay_batch_size < self.views:
            raise ConfigError(f"strategy.replay_batch_size ({self.replay_batch_size}) must be at least strategy.views "
                              f"({self.views}): a step replays whole view-batches; raise it or lower views")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)
        self.schedule = RecallSchedule(self.recall_interval, self.local_generator)

    def view_batch(self, rows: int) -> dict[str, torch.Tensor]:
        """The replayed rows of a step of ``rows``: ``max(1, rows // views)`` rested samples (fewer while the
        memory holds fewer), each ``views`` times in a row, as they enter training (counted, each copy
        augmented afresh)."""
        slots = self.schedule.choose(self.memory.contents()["arrival"], max(1, rows // self.views))
        return self.memory.replay_slots(slots.repeat_interleave(self.views))

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, task = batch.x, batch.y, batch.task  # (B, ...), (B,), (B,)
        if len(self.memory):
            replay = self.view_batch(self.replay_batch_size or len(y))  # (V R / V, ...)
            x, y, task = torch.cat([x, replay["x"]]), torch.cat([y, replay["y"]]), torch.cat([task, replay["task"]])
        loss = self.loss(model, x, y, task)
        seen = self.memory.buffer.seen
        arrivals = torch.arange(seen, seen + len(batch.y))  # (B,)
        self.schedule.learned(arrivals)
        self.memory.remember(batch, arrival=arrivals.to(batch.y.device))
        return loss

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
        self.schedule.load_state_dict(state["schedule"])
