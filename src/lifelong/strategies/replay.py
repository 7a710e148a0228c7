"""Replay mixture: a fixed fraction of every training batch drawn from the data of earlier experiences."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Gt, Interval
from lifelong.data.lazy import as_tensor
from lifelong.data.streams import Batch, Experience
from lifelong.strategies.base import (
    BOTH_OBJECTIVES,
    Capabilities,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.memory import BufferSize, MemoryBudget, ReservoirMemory

FILL_ROWS = 4096
"""Rows of an experience's training set offered to the memory at a time (reads of a lazy set stay bounded)."""


def domain_weights(sizes: dict[int, int], temperature: float) -> dict[int, float]:
    """Temperature sampling of domains: ``p_i = n_i^(1/T) / sum_j n_j^(1/T)`` for the domain sizes ``n_i``."""
    powered = {domain: size ** (1.0 / temperature) for domain, size in sizes.items()}
    total = sum(powered.values())
    return {domain: value / total for domain, value in powered.items()}


@dataclass
class ReplayMixture(Strategy):
    """Replay as continual pre-training mixes it (Ibrahim et al. 2024, "Simple and Scalable Strategies to
    Continually Pre-train Large Language Models"): each batch keeps its size and a fraction
    ``replay_fraction`` of its rows comes from earlier experiences' data, so the compute per step is that
    of training on new data alone (unlike ER, which adds a replayed batch on top of the new one). The
    paper's 1 % to 5 % of replay recovers most of what naive continuation forgets on the earlier domain.

    The memory is a reservoir (Vitter 1985) of ``buffer_size`` samples (a language model's: windows of
    ``L + 1`` tokens) over every earlier experience's training set, filled when an experience ends, so it
    never holds the current experience's data. The replayed rows replace the batch's last new rows: the
    sampler's order is random, so training sees a random ``1 - replay_fraction`` share of the new data, as a
    fixed-token budget split between new and replayed data does.

    ``domain_temperature`` weighs the earlier experiences (domains) against each other: ``None`` draws the
    replayed rows uniformly from the reservoir, so each domain comes back in proportion to its share of the
    stream so far; a temperature ``T`` draws each row's domain with probability ``p_i ~ n_i^(1/T)``, ``n_i``
    the domain's training-set size (temperature sampling, as multilingual pre-training mixes languages and as
    "Upsample or Upweight?" compares it; ``T = 1``: proportional, large ``T``: every domain alike), then the row
    uniformly among the domain's stored rows (with replacement once a domain's rows are used up in a batch).

    The number of replayed rows is exact, batch by batch: the share owed (``replay_fraction`` times the
    batch size, kept as an exact fraction) accumulates and each batch replays its whole part, so a batch of
    ``B`` holds ``floor`` or ``ceil`` of ``replay_fraction * B`` replayed rows and after ``n`` batches the
    replayed rows are ``floor(replay_fraction * (B_1 + ... + B_n))``: 1 % of batches of 16 replays one row
    in the batches where the owed share crosses a whole row. Departure: the paper mixes at the token level
    of a packed stream; here the unit is the window (the runner's sample).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True)

    replay_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.05
    """Share of every batch replayed from earlier experiences (0.01, 0.05, 0.25 in the paper's sweeps)."""
    buffer_size: BufferSize = 1000
    memory_budget_bytes: MemoryBudget = 0
    domain_temperature: Annotated[float, Gt(0)] | None = None
    """Temperature of the replayed domains' mixture (``p_i ~ n_i^(1/T)``); None: uniform over the memory."""
    owed: Fraction = field(default=Fraction(0), init=False, repr=False)
    domain_sizes: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    """Training-set size of each earlier experience, by its task id (the domain of a window)."""
    memory: ReservoirMemory = field(init=False, repr=False)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, budget_bytes=self.memory_budget_bytes)
        self.owed, self.domain_sizes = Fraction(0), {}

    def replay_rows(self, batch_size: int) -> int:
        """Rows of a batch of ``batch_size`` to replay: the whole part of the share owed so far."""
        self.owed += Fraction(str(self.replay_fraction)) * batch_size
        rows = min(int(self.owed), batch_size)
        self.owed -= rows
        return rows

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, task = batch.x, batch.y, batch.task
        rows = self.replay_rows(len(y)) if len(self.memory) else 0
        if rows:
            replay = self.memory.replay(rows) if self.domain_temperature is None else self.weighted_replay(rows)
            keep = len(y) - rows
            x = torch.cat([x[:keep], replay["x"]])
            y = torch.cat([y[:keep], replay["y"]])
            task = torch.cat([task[:keep], replay["task"]])
        return self.loss(model, x, y, task)

    def weighted_replay(self, rows: int) -> dict[str, torch.Tensor]:
        """``rows`` replayed rows whose domains follow :meth:`domain_weights` (module docstring)."""
        stored = self.memory.contents()["task"]
        domains = sorted(set(stored.tolist()))
        weights = domain_weights({d: self.domain_sizes.get(d, 1) for d in domains}, self.domain_temperature or 1.0)
        drawn = torch.multinomial(torch.tensor([weights[d] for d in domains]), rows, replacement=True,
                                  generator=self.generator)
        slots = []
        for position, domain in enumerate(domains):
            wanted = int((drawn == position).sum())
            if not wanted:
                continue
            own = (stored == domain).nonzero().flatten().cpu()  # (n_d,) the domain's slots
            order = torch.randperm(len(own), generator=self.generator)
            picks = order[torch.arange(wanted) % len(own)]  # without replacement until the domain's rows run out
            slots.append(own[picks])
        return self.memory.replay_slots(torch.cat(slots))

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.domain_sizes[experience.task_id] = len(experience.train)
        data = experience.train.subset(self.world.portion(len(experience.train)))
        for begin in range(0, len(data), FILL_ROWS):
            part = data.subset(torch.arange(begin, min(begin + FILL_ROWS, len(data)), device=data.y.device))
            self.memory.offer(as_tensor(part.x), part.y, part.task)

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict(),
                "owed": [self.owed.numerator, self.owed.denominator], "domain_sizes": dict(self.domain_sizes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
        self.owed = Fraction(*state["owed"])
        self.domain_sizes = {int(k): int(v) for k, v in state.get("domain_sizes", {}).items()}
