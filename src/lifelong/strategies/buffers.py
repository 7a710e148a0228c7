"""Replay memories of a fixed total size, each drawing from an explicit ``torch.Generator``.

A buffer holds named tensors with one row per sample (``x``, ``y``, ``task`` and, for logit replay,
``logits``), allocated at the first insertion. :class:`ReservoirBuffer` keeps a uniform sample of
everything it was offered (Vitter's algorithm R, 1985); :class:`ClassBalancedBuffer` keeps equal
counts per class seen so far.
"""

from __future__ import annotations

import torch

from lifelong.data.lazy import Inputs, as_tensor


class _Memory:
    """Shared storage of a buffer: named row tensors, a fill count and sampling."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.generator = generator
        self.data: dict[str, torch.Tensor] = {}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _allocate(self, rows: dict[str, Inputs]) -> None:
        """Storage for ``capacity`` rows, on the labels' device (a lazy dataset's inputs are read, and
        moved there, only for the rows kept)."""
        if not self.data:
            device = rows["y"].device
            self.data = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=device)
                         for k, v in rows.items()}

    def _write_chosen(self, chosen: dict[int, int], rows: dict[str, Inputs]) -> None:
        """Store ``rows[key][row]`` at ``slot`` for every ``slot -> row`` pair (slots are distinct)."""
        if not chosen:
            return
        device = next(iter(self.data.values())).device
        slots = torch.tensor(list(chosen.keys()), device=device)
        index = torch.tensor(list(chosen.values()))
        for key, tensor in self.data.items():
            values = rows[key]
            tensor[slots] = as_tensor(values[index.to(values.device)]).to(device, tensor.dtype)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """``min(n, len(self))`` stored rows drawn without replacement."""
        take = min(n, self.size)
        index = torch.randperm(self.size, generator=self.generator)[:take]
        device = next(iter(self.data.values())).device
        index = index.to(device)
        return {k: v[index] for k, v in self.data.items()}

    def contents(self) -> dict[str, torch.Tensor]:
        """Every stored row (views of the storage)."""
        return {k: v[: self.size] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, object]:
        return {"size": self.size, "data": dict(self.data), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.size = int(state["size"])  # type: ignore[arg-type]
        self.data = dict(state["data"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]


class ReservoirBuffer(_Memory):
    """Reservoir sampling: after ``n`` offers each one is stored with probability ``capacity / n``."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        super().__init__(capacity, generator)
        self.seen = 0

    def add(self, **rows: torch.Tensor) -> None:
        """Offer a batch of rows (all tensors with the same first dimension) to the reservoir."""
        n = len(next(iter(rows.values())))
        if self.capacity == 0 or n == 0:
            self.seen += n
            return
        self._allocate(rows)
        draws = torch.rand(n, generator=self.generator).tolist()
        chosen: dict[int, int] = {}  # slot -> row of the batch; a later row overwrites an earlier one
        for row, u in enumerate(draws):
            position = self.seen + row  # 0-based index of this offer in the whole stream
            if position < self.capacity:
                chosen[position] = row
            else:
                slot = int(u * (position + 1))
                if slot < self.capacity:
                    chosen[slot] = row
        self.seen += n
        self.size = min(self.capacity, self.seen)
        self._write_chosen(chosen, rows)

    def state_dict(self) -> dict[str, object]:
        return {**super().state_dict(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.seen = int(state["seen"])  # type: ignore[arg-type]


class ClassBalancedBuffer(_Memory):
    """Greedy class-balanced memory (as in GDumb, Prabhu et al. 2020): a new sample is stored while
    there is room; when full, it replaces a random sample of the currently largest class, unless its
    own class already holds at least as many as any other class. Memory size is total, not per class."""

    def add(self, **rows: torch.Tensor) -> None:
        labels = rows["y"].tolist()
        if self.capacity == 0 or not labels:
            return
        self._allocate(rows)
        counts = self.class_counts()
        chosen: dict[int, int] = {}  # slot -> row of the batch; a later row overwrites an earlier one
        stored = self.data["y"][: self.size].tolist()
        for row, label in enumerate(labels):
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
                stored.append(label)
            else:
                largest = max(counts.values())
                if counts.get(label, 0) >= largest:
                    continue
                victims = sorted(c for c, k in counts.items() if k == largest)
                victim = victims[int(torch.randint(len(victims), (1,), generator=self.generator))]
                candidates = [i for i, c in enumerate(stored) if c == victim]
                slot = candidates[int(torch.randint(len(candidates), (1,), generator=self.generator))]
                counts[victim] -= 1
                stored[slot] = label
            counts[label] = counts.get(label, 0) + 1
            chosen[slot] = row
        self._write_chosen(chosen, rows)

    def class_counts(self) -> dict[int, int]:
        """Number of stored samples per class."""
        if not self.size:
            return {}
        labels, counts = torch.unique(self.data["y"][: self.size], return_counts=True)
        return dict(zip(labels.tolist(), counts.tolist(), strict=True))
