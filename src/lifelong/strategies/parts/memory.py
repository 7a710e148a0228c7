"""Replay memories of a fixed total size, each drawing from an explicit ``torch.Generator``.

A buffer holds named tensors with one row per sample (``x``, ``y``, ``task`` and, for logit replay,
``logits``), allocated at the first insertion. :class:`ReservoirBuffer` keeps a uniform sample of
everything it was offered (Vitter's algorithm R, 1985); :class:`ClassBalancedBuffer` keeps equal
counts per class seen so far. :class:`ReservoirMemory` is the part a replay method holds: a reservoir
buffer set up from the method's settings and the run's context, whose replayed rows enter training
counted and augmented. The settings every replay method declares have their type, range and meaning
written once here (:data:`BufferSize`, :data:`ReplayBatchSize`, :data:`MemoryKeeps`, :data:`MemoryBudget`).

A total-memory budget (:data:`MemoryBudget`) sizes a memory in bytes instead of samples, so that methods
that keep different things are compared at equal memory: what the method keeps beside its samples (an
earlier model, anchors, statistics) is paid first, and the rest holds as many samples as fit
(:func:`budget_capacity`), each costing its stored row (inputs or positions, label, task id, DER's logits).
A distillation method's model copy then costs what the samples an experience-replay method could keep
instead cost.

A memory of a stream read lazily from a dataset (:mod:`lifelong.data.lazy`) keeps, by choice
(:data:`MEMORY_KEEPS`), the samples it chose (read once, when chosen: replay costs no reads) or only
their positions in the dataset (8 bytes a sample whatever its size: each replay reads its samples
again, as a memory larger than the host's RAM must; the same values, so the run is the same).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from lifelong.bounds import Annotated, Ge
from lifelong.data.lazy import Inputs, LazyInputs, LazySource, as_tensor
from lifelong.data.streams import Batch, Stream
from lifelong.errors import ConfigError

if TYPE_CHECKING:
    from lifelong.strategies.base import Strategy

#: What a memory keeps of each sample: the inputs, or their positions in the lazy dataset they come from.
MEMORY_KEEPS = ("samples", "positions")

BufferSize = Annotated[int, Ge(0)]
"""``buffer_size``: total number of samples a replay memory keeps (not per class); in data-parallel training
each rank keeps its share, so the union over ranks has the configured size."""
ReplayBatchSize = Annotated[int, Ge(0)]
"""``replay_batch_size``: samples replayed from memory per step; 0 means as many as the new batch holds."""
MemoryKeeps = str
"""``memory_keeps``: ``samples``, or ``positions`` in the lazy dataset the stream is read from (8 bytes a
sample; each replay reads its samples again), for memories larger than the host's RAM (one of
:data:`MEMORY_KEEPS`, checked by :func:`check_memory_keeps`)."""

MemoryBudget = Annotated[int, Ge(0)]
"""``memory_budget_bytes``: the bytes the method may keep across experiences in all (its
:meth:`~lifelong.strategies.base.Strategy.memory_bytes`), 0 for no budget. With a budget the memory holds as
many samples as the budget leaves room for once the method's other state is paid, and ``buffer_size`` is not
used; the capacity is priced when the first sample arrives (its row size is known then), and in data-parallel
training each rank keeps its share of it, as of ``buffer_size``."""


def budget_capacity(budget: int, other: int, row: int) -> int:
    """Samples a total-memory budget of ``budget`` bytes holds once ``other`` bytes of the method's other state
    are paid, each sample costing ``row`` bytes: ``(budget - other) // row``. A one-line error when the other
    state alone exceeds the budget."""
    if other > budget:
        raise ConfigError(f"strategy.memory_budget_bytes = {budget} is less than the {other} bytes the strategy "
                          f"keeps beside its sample memory; raise it above {other} (or set 0 for no budget)")
    return (budget - other) // row


def row_bytes(rows: dict[str, Inputs]) -> int:
    """Bytes one stored row of ``rows`` (named columns (N, ...)) takes."""
    return sum(math.prod(column.shape[1:]) * column.dtype.itemsize for column in rows.values())


def memory_source(keeps: str, stream: Stream) -> LazySource | None:
    """The dataset a memory that keeps ``positions`` reads its samples from (None for one that keeps the
    samples); an error naming the fix when the stream is not read from one lazy dataset."""
    if keeps == "samples":
        return None
    sources = {id(e.train.x.source): e.train.x.source for e in stream if isinstance(e.train.x, LazyInputs)}
    if len(sources) != 1 or not all(e.train.lazy for e in stream):
        raise ConfigError("strategy.memory_keeps = 'positions' keeps positions in a lazy dataset, but this stream's "
                          "training data is held in memory; use memory_keeps = 'samples' (or a lazy dataset)")
    return next(iter(sources.values()))


def check_memory_keeps(keeps: str) -> None:
    """Refuse, in one line, a ``memory_keeps`` that is not one of :data:`MEMORY_KEEPS`."""
    if keeps not in MEMORY_KEEPS:
        raise ConfigError(f"strategy.memory_keeps must be one of {', '.join(MEMORY_KEEPS)}, got {keeps!r}")


class _Memory:
    """Shared storage of a buffer: named row tensors, a fill count and sampling. With a ``source`` (a lazy
    dataset) the ``x`` column holds positions in it, read when sampled."""

    def __init__(self, capacity: int, generator: torch.Generator, source: LazySource | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.generator = generator
        self.source = source
        self.data: dict[str, torch.Tensor] = {}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _kept(self, rows: dict[str, Inputs]) -> dict[str, Inputs]:
        """The rows as stored: with a source, the inputs' positions in it instead of the inputs."""
        if self.source is None:
            return rows
        x = rows["x"]
        if not isinstance(x, LazyInputs) or x.source.dataset is not self.source.dataset:
            raise ConfigError("a memory that keeps positions was offered samples that are not in its dataset; "
                              "use strategy.memory_keeps = 'samples'")
        return {**rows, "x": x.positions}

    def row_bytes(self, rows: dict[str, Inputs]) -> int:
        """Bytes one of ``rows`` takes as stored (with a source: its position instead of its inputs)."""
        return row_bytes(self._kept(rows))

    def _inputs(self, positions: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The inputs at ``positions`` of the source, read now, on ``device``."""
        assert self.source is not None
        return as_tensor(LazyInputs(self.source, positions.cpu())).to(device, non_blocking=True)

    def _allocate(self, rows: dict[str, Inputs]) -> None:
        """Storage for ``capacity`` rows, on the labels' device (a lazy dataset's inputs are read, and
        moved there, only for the rows kept)."""
        if not self.data:
            device = rows["y"].device
            self.data = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=device)
                         for k, v in rows.items()}

    def _write_block(self, start: int, rows: dict[str, Inputs], count: int) -> None:
        """Store the first ``count`` rows at slots ``start .. start + count - 1`` (one copy per tensor)."""
        if not count:
            return
        for key, tensor in self.data.items():
            tensor[start:start + count].copy_(as_tensor(rows[key][:count]))

    def _write_chosen(self, chosen: dict[int, int], rows: dict[str, Inputs]) -> None:
        """Store ``rows[key][row]`` at ``slot`` for every ``slot -> row`` pair, one scatter per tensor. The
        indices are copied to the device with ``non_blocking``: PyTorch then does not synchronise the stream
        after the copy, as it does for a blocking one. A lazy dataset's inputs are read for the chosen
        rows only."""
        if not chosen:
            return
        device = next(iter(self.data.values())).device
        slots = torch.from_numpy(np.fromiter(chosen.keys(), np.int64, len(chosen))).to(device, non_blocking=True)
        index = torch.from_numpy(np.fromiter(chosen.values(), np.int64, len(chosen)))
        for key, tensor in self.data.items():
            values = rows[key]
            picked = as_tensor(values[index]) if isinstance(values, LazyInputs) else \
                values.index_select(0, index.to(values.device, non_blocking=True))
            tensor.index_copy_(0, slots, picked.to(device, tensor.dtype))

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """``min(n, len(self))`` stored rows drawn without replacement."""
        take = min(n, self.size)
        return self.rows(torch.randperm(self.size, generator=self.generator)[:take])

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stored rows at ``index`` (a long tensor of slots below ``len(self)``)."""
        index = index.to(next(iter(self.data.values())).device, non_blocking=True)  # no stream synchronisation
        rows = {k: v.index_select(0, index) for k, v in self.data.items()}
        if self.source is not None:
            rows["x"] = self._inputs(rows["x"], rows["y"].device)
        return rows

    def contents(self) -> dict[str, Inputs]:
        """Every stored row (views of the storage; with a source, ``x`` a lazy view of the kept positions)."""
        rows: dict[str, Inputs] = {k: v[: self.size] for k, v in self.data.items()}
        if self.source is not None:
            rows["x"] = LazyInputs(self.source, self.data["x"][: self.size].cpu())
        return rows

    def state_dict(self) -> dict[str, object]:
        return {"size": self.size, "data": dict(self.data), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.size = int(state["size"])  # type: ignore[arg-type]
        self.data = dict(state["data"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]


class ReservoirBuffer(_Memory):
    """Reservoir sampling: after ``n`` offers each one is stored with probability ``capacity / n``."""

    def __init__(self, capacity: int, generator: torch.Generator, source: LazySource | None = None) -> None:
        super().__init__(capacity, generator, source)
        self.seen = 0

    def add(self, **rows: Inputs) -> None:
        """Offer a batch of rows (all tensors with the same first dimension) to the reservoir.

        Algorithm R on the whole batch at once: one uniform draw per row, made in one call; the rows that
        find room fill the next slots in one copy per tensor; after that offer ``i`` of the stream
        (0-based) replaces slot ``floor(u * (i + 1))`` when it lands below the capacity (probability
        ``capacity / (i + 1)``), all such rows in one scatter per tensor. Where two rows of a batch land
        on one slot the later one stays, as when offered one by one: the memory is the row-by-row
        algorithm's, bit for bit."""
        rows = self._kept(rows)
        n = len(next(iter(rows.values())))
        if self.capacity == 0 or n == 0:
            self.seen += n
            return
        self._allocate(rows)
        draws = torch.rand(n, generator=self.generator).numpy()  # (n,)
        room = min(max(self.capacity - self.seen, 0), n)
        self._write_block(self.seen, rows, room)
        if room < n:
            counts = np.arange(self.seen + room + 1, self.seen + n + 1, dtype=np.float64)  # (n - room,): i + 1
            slots = (draws[room:] * counts).astype(np.int64)  # (n - room,); float64 as int(u * (i + 1))
            kept = (slots < self.capacity).nonzero()[0]  # (k,) in offer order
            if len(kept):  # slot -> row of the batch; a later row overwrites an earlier one
                self._write_chosen(dict(zip(slots[kept].tolist(), (kept + room).tolist(), strict=True)), rows)
        self.seen += n
        self.size = min(self.capacity, self.seen)

    def state_dict(self) -> dict[str, object]:
        return {**super().state_dict(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.seen = int(state["seen"])  # type: ignore[arg-type]


class ClassBalancedBuffer(_Memory):
    """Greedy class-balanced memory (as in GDumb, Prabhu et al. 2020): a new sample is stored while
    there is room; when full, it replaces a random sample of the currently largest class, unless its
    own class already holds at least as many as any other class. Memory size is total, not per class."""

    def add(self, **rows: Inputs) -> None:
        """Offer a batch of rows in order. While there is room the rows go in as they come, in one block;
        after that the policy runs row by row, since each decision depends on the counts the one before
        left, over a map from each class to its slots rather than a scan of the memory."""
        rows = self._kept(rows)
        n = len(rows["y"])
        if self.capacity == 0 or n == 0:
            return
        self._allocate(rows)
        room = min(self.capacity - self.size, n)
        self._write_block(self.size, rows, room)
        self.size += room
        if room == n:
            return
        labels = self.data["y"][: self.size].tolist() + rows["y"][room:].tolist()  # memory, then the later offers
        members: dict[int, list[int]] = {}  # class -> its slots, ascending
        for slot, label in enumerate(labels[: self.size]):
            members.setdefault(label, []).append(slot)
        counts = {label: len(kept) for label, kept in members.items()}
        chosen: dict[int, int] = {}  # slot -> row of the batch; a later row overwrites an earlier one
        for row, label in enumerate(labels[self.size:], start=room):
            largest = max(counts.values())
            if counts.get(label, 0) >= largest:
                continue
            victims = sorted(c for c, k in counts.items() if k == largest)
            victim = victims[int(torch.randint(len(victims), (1,), generator=self.generator))]
            slot = members[victim].pop(int(torch.randint(counts[victim], (1,), generator=self.generator)))
            bisect.insort(members.setdefault(label, []), slot)
            counts[victim] -= 1
            counts[label] = counts.get(label, 0) + 1
            chosen[slot] = row
        self._write_chosen(chosen, rows)

    def class_counts(self) -> dict[int, int]:
        """Number of stored samples per class."""
        if not self.size:
            return {}
        labels, counts = torch.unique(self.data["y"][: self.size], return_counts=True)
        return dict(zip(labels.tolist(), counts.tolist(), strict=True))


class ReservoirMemory:
    """The replay memory a method holds (ER, ER-ACE, A-GEM, UER, DER, DER++, the replay mixture): a
    reservoir (Vitter 1985; Chaudhry et al. 2019) of this rank's share of ``buffer_size`` samples, drawn
    with the method's :attr:`~lifelong.strategies.base.Strategy.local_generator`, so that in data-parallel
    training each rank keeps a uniform sample of its own shard and the union is one of the stream.

    With a total-memory budget (``budget_bytes``, :data:`MemoryBudget`) the capacity is
    :func:`budget_capacity` of the budget, the method's other state (its
    :meth:`~lifelong.strategies.base.Strategy.memory_bytes` before the memory holds anything) and the first
    offered row's size, priced at the first offer and kept in the state dict (so a resumed run keeps it).

    Rows drawn by :meth:`replay` enter training through the method's
    :meth:`~lifelong.strategies.base.Strategy.as_replayed`: counted in its ``replayed`` and augmented as
    the run's training batches are (a memory keeps samples un-augmented; each replay is augmented afresh)."""

    def __init__(self, strategy: Strategy, buffer_size: int, keeps: str = "samples", budget_bytes: int = 0) -> None:
        """Set up in the method's :meth:`~lifelong.strategies.base.Strategy.setup` (it reads the context)."""
        self.budget_bytes = budget_bytes
        self.priced = not budget_bytes
        """Whether the capacity is known: always without a budget, after the first offer with one."""
        self.share: Callable[[int], int] = strategy.world.share
        self.other_bytes: Callable[[], int] = strategy.memory_bytes
        self.buffer = ReservoirBuffer(0 if budget_bytes else self.share(buffer_size), strategy.local_generator,
                                      memory_source(keeps, strategy.context.stream))
        self.as_replayed: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = strategy.as_replayed

    def __len__(self) -> int:
        return len(self.buffer)

    def remember(self, batch: Batch, **extra: torch.Tensor) -> None:
        """Offer a training batch: its un-augmented inputs (or their positions in the dataset), labels,
        task ids and ``extra`` columns (B, ...) (DER's logits)."""
        inputs = batch.stored if self.buffer.source is None else batch.view
        assert inputs is not None, "a memory that keeps positions is only set up on a lazy stream"
        self._add(x=inputs, y=batch.y, task=batch.task, **extra)

    def offer(self, x: Inputs, y: torch.Tensor, task: torch.Tensor) -> None:
        """Offer samples that did not come in a training batch (an experience's set when it ends), in order."""
        self._add(x=x, y=y, task=task)

    def _add(self, **rows: Inputs) -> None:
        if not self.priced:  # the first offer: the budget's capacity, from the method's other state and a row
            self.buffer.capacity = self.share(budget_capacity(self.budget_bytes, self.other_bytes(),
                                                              self.buffer.row_bytes(rows)))
            self.priced = True
        self.buffer.add(**rows)

    def replay(self, count: int) -> dict[str, torch.Tensor]:
        """``min(count, len(self))`` rows drawn without replacement, as they enter training: counted as
        replayed, their inputs augmented."""
        return self.as_replayed(self.buffer.sample(count))

    def sample(self, count: int) -> dict[str, torch.Tensor]:
        """``min(count, len(self))`` rows drawn without replacement, as stored: neither counted nor augmented."""
        return self.buffer.sample(count)

    def replay_slots(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows at the memory's slots ``index``, as they enter training (counted, augmented): for a caller
        that chooses the rows itself (:class:`~lifelong.strategies.replay.ReplayMixture`'s domain weights)."""
        return self.as_replayed(self.buffer.rows(index))

    def contents(self) -> dict[str, Inputs]:
        """Every stored row (views of the storage)."""
        return self.buffer.contents()

    def state_dict(self) -> dict[str, object]:
        """The buffer's state; with a budget, the capacity it priced too (None before the first offer)."""
        state = self.buffer.state_dict()
        if self.budget_bytes:
            state["capacity"] = self.buffer.capacity if self.priced else None
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.buffer.load_state_dict(state)
        if self.budget_bytes and state["capacity"] is not None:
            self.buffer.capacity, self.priced = int(state["capacity"]), True  # type: ignore[call-overload]


class RecallSchedule:
    """Which stored samples a step replays: a sample learned at step ``t`` (replayed, or trained on when it
    arrived in a new batch) rests, and is replayed again at step ``t + interval`` at the earliest (the recall
    interval of Kang et al., CVPR 2025, "Do Your Best and Get Enough Rest for Continual Learning"). Each
    step draws its samples uniformly, without replacement, among the rested ones, with the method's
    :attr:`~lifelong.strategies.base.Strategy.local_generator` (each data-parallel rank schedules its own
    share of the memory); when fewer than a step's samples are rested, those that have rested longest
    make up the rest (ties: the lower slot), so every step replays as many as the memory holds.

    A sample is known by its arrival, the count of samples offered to the memory before it (a column the
    memory stores with it), so a sample that replaces another in a slot rests from its own arrival, not
    its slot's last replay. ``interval = 0`` rests ``len(memory) // count`` steps for a step of ``count``
    samples, the longest rest after which the memory still has a sample for every row: a full memory is
    then replayed in a round robin."""

    def __init__(self, interval: int, generator: torch.Generator) -> None:
        self.interval = interval
        self.generator = generator
        self.step = 0
        """Steps scheduled so far."""
        self.last: dict[int, int] = {}
        """The step at which each sample (by arrival) was last learned, for those stored or just offered."""

    def effective_interval(self, stored: int, count: int) -> int:
        """The rest a step of ``count`` samples keeps with ``stored`` samples in memory."""
        return stored // count if self.interval == 0 else self.interval

    def learned(self, arrivals: torch.Tensor) -> None:
        """Samples of this step's new batch, with ``arrivals`` (B,), were trained on: they rest from now."""
        for arrival in arrivals.tolist():
            self.last[arrival] = self.step

    def rested(self, arrivals: list[int], count: int) -> torch.Tensor:
        """The slots (K,) of the stored samples with ``arrivals`` that rested enough for a step of ``count``."""
        interval = self.effective_interval(len(arrivals), count)
        return torch.tensor([slot for slot, arrival in enumerate(arrivals)
                             if self.step - self.last.get(arrival, -interval) >= interval], dtype=torch.long)

    def choose(self, arrivals: torch.Tensor, count: int) -> torch.Tensor:
        """The slots (``min(count, N)``) of the stored samples with ``arrivals`` (N,) this step replays, and
        the step counted: the rested ones drawn uniformly, made up by those that rested longest."""
        held = arrivals.tolist()
        rested = self.rested(held, count)
        slots = rested[torch.randperm(len(rested), generator=self.generator)[:count]]
        if len(slots) < count:
            waiting = sorted(set(range(len(held))) - set(rested.tolist()),
                             key=lambda slot: (self.last.get(held[slot], -1), slot))
            slots = torch.cat([slots, torch.tensor(waiting[:count - len(slots)], dtype=torch.long)])
        stored = set(held)
        self.last = {arrival: step for arrival, step in self.last.items() if arrival in stored}
        for slot in slots.tolist():
            self.last[held[slot]] = self.step
        self.step += 1
        return slots

    def state_dict(self) -> dict[str, object]:
        return {"step": self.step, "last": [[arrival, step] for arrival, step in self.last.items()]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.step = int(state["step"])  # type: ignore[call-overload]
        self.last = {int(arrival): int(step) for arrival, step in state["last"]}  # type: ignore[union-attr]
