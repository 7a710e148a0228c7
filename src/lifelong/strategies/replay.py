"""Replay mixture: a fixed fraction of every training batch drawn from the data of earlier experiences."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt, Interval
from lifelong.data.lazy import as_tensor
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
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


def apportion(rows: int, weights: dict[int, float], owed: dict[int, Fraction]) -> dict[int, int]:
    """``rows`` split among the domains of ``weights`` (normalised exactly) by their shares, carrying what
    each was owed over from earlier batches in ``owed`` (updated): each domain first gets the whole part of
    its share plus what it was owed, the rows left over go to the largest remainders. What a domain is owed
    stays in (-1, 1), so after every batch each domain's replayed rows are within one row of its share of
    all the rows replayed since its weight was last set."""
    exact = {domain: Fraction(weight) for domain, weight in weights.items()}
    total = sum(exact.values())
    due = {domain: owed.get(domain, Fraction(0)) + rows * share / total for domain, share in exact.items()}
    counts = {domain: max(int(value // 1), 0) for domain, value in due.items()}
    while sum(counts.values()) < rows:  # the largest remainder gets the next row
        counts[max(due, key=lambda d: (due[d] - counts[d], -d))] += 1
    while sum(counts.values()) > rows:  # a domain owed less than nothing (clamped at 0 rows) pushed it over
        counts[min((d for d in due if counts[d]), key=lambda d: (due[d] - counts[d], d))] -= 1
    owed.clear()
    owed.update({domain: due[domain] - counts[domain] for domain in due})
    return counts


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

    ``domain_temperature`` and ``domain_mixture`` weigh the earlier experiences (domains) against each
    other: with neither, the replayed rows are drawn uniformly from the reservoir, so each domain comes back
    in proportion to its share of the stream so far; a temperature ``T`` gives domain ``i`` the share
    ``p_i ~ n_i^(1/T)``, ``n_i`` the domain's training-set size (temperature sampling, as multilingual
    pre-training mixes languages and as "Upsample or Upweight?", Wang et al. 2024, compares it; ``T = 1``:
    proportional, large ``T``: every domain alike); ``domain_mixture`` gives the weights themselves, one per
    domain of the stream in its order (those of the domains not yet in the memory are left out and the rest
    renormalised). Each batch's replayed rows are split among the domains by :func:`apportion`, so every
    domain's share of the replayed rows is exact to within one row (window) after every batch, not only in
    expectation; then the rows are drawn uniformly among the domain's stored rows (with replacement once a
    domain's rows are used up in a batch).

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
    domain_mixture: list[Annotated[float, Ge(0)]] | None = None
    """Weights of the replayed domains, one per domain of the stream in its order (renormalised over the
    domains in the memory); None: uniform over the memory (or ``domain_temperature``)."""
    domain_owed: dict[int, Fraction] = field(default_factory=dict, init=False, repr=False)
    """What each domain is owed of replayed rows (:func:`apportion`), carried over between batches."""
    owed: Fraction = field(default=Fraction(0), init=False, repr=False)
    domain_sizes: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    """Training-set size of each earlier experience, by its task id (the domain of a window)."""
    memory: ReservoirMemory = field(init=False, repr=False)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, budget_bytes=self.memory_budget_bytes)
        self.owed, self.domain_sizes, self.domain_owed = Fraction(0), {}, {}
        if self.domain_temperature is not None and self.domain_mixture is not None:
            raise ConfigError("strategy.domain_mixture and strategy.domain_temperature both weigh the replayed "
                              "domains; keep one of them")
        n_domains = len(context.stream)
        if self.domain_mixture is not None and (len(self.domain_mixture) != n_domains or not any(self.domain_mixture)
                                                or min(self.domain_mixture) < 0):
            raise ConfigError(f"strategy.domain_mixture needs one weight >= 0 per domain of the stream ({n_domains}), "
                              f"not all 0, got {self.domain_mixture}")

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
            weighted = self.domain_temperature is not None or self.domain_mixture is not None
            replay = self.weighted_replay(rows) if weighted else self.memory.replay(rows)
            keep = len(y) - rows
            x = torch.cat([x[:keep], replay["x"]])
            y = torch.cat([y[:keep], replay["y"]])
            task = torch.cat([task[:keep], replay["task"]])
        return self.loss(model, x, y, task)

    def weighted_replay(self, rows: int) -> dict[str, torch.Tensor]:
        """``rows`` replayed rows whose domains have the shares of :meth:`mixture` (class docstring)."""
        stored = self.memory.contents()["task"]
        counts = apportion(rows, self.mixture(sorted(set(stored.tolist()))), self.domain_owed)
        slots = []
        for domain, wanted in counts.items():
            if not wanted:
                continue
            own = (stored == domain).nonzero().flatten().cpu()  # (n_d,) the domain's slots
            order = torch.randperm(len(own), generator=self.generator)
            picks = order[torch.arange(wanted) % len(own)]  # without replacement until the domain's rows run out
            slots.append(own[picks])
        return self.memory.replay_slots(torch.cat(slots))

    def mixture(self, domains: list[int]) -> dict[int, float]:
        """The weight of each of the stored ``domains``: ``domain_mixture``'s, or temperature sampling's
        (:func:`domain_weights` of the domains' training-set sizes); weights of 0 are left out."""
        if self.domain_mixture is not None:
            weights = {d: self.domain_mixture[d] for d in domains if self.domain_mixture[d] > 0}
            if not weights:
                raise ConfigError(f"strategy.domain_mixture gives weight 0 to every domain in the memory ({domains}); "
                                  "give an earlier domain a positive weight")
            return weights
        return domain_weights({d: self.domain_sizes.get(d, 1) for d in domains}, self.domain_temperature or 1.0)

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
                "owed": [self.owed.numerator, self.owed.denominator], "domain_sizes": dict(self.domain_sizes),
                "domain_owed": {d: [v.numerator, v.denominator] for d, v in self.domain_owed.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
        self.owed = Fraction(*state["owed"])
        self.domain_sizes = {int(k): int(v) for k, v in state.get("domain_sizes", {}).items()}
        self.domain_owed = {int(k): Fraction(*v) for k, v in state.get("domain_owed", {}).items()}
