"""Data that does not fit in memory as tensors: a map-style ``torch.utils.data.Dataset`` read through
a ``DataLoader`` (worker processes, pinned memory) only when a batch is needed.

Only the labels of such a dataset are held in memory (given as a targets array, so that scenarios
split it by class without reading a sample); the inputs are a :class:`LazyInputs`, a view of sample
positions in the dataset that can be indexed, concatenated and handed to every place a tensor of
inputs goes (a :class:`~lifelong.data.streams.TensorSet`'s ``x``). Whole-set passes (evaluation,
feature statistics, Fisher estimates, hard-batch scoring) read it in batches with :func:`input_batches`;
the runner reads each epoch through the source's training loader, whose worker processes persist
across epochs and experiences. A replay memory keeps the samples it chose (read once, when chosen) or,
by choice, their positions (read at each replay; :mod:`lifelong.strategies.parts.memory`); an exemplar set
taken as a subset of the stream (iCaRL) keeps positions, read when trained on.

Reading is deterministic: ``__getitem__`` must return the same sample for the same position (random
augmentation belongs to the runner, which draws it from the run's seed on the training device), so a
resumed run reads the same batches. A dataset yields ``(input, label)`` with the input a tensor or a
numpy array of the declared shape; the label must agree with the targets array (checked on every
batch read, so a mismatch is an error naming the position, not a silent wrong label).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as MapDataset

from lifelong.errors import DataError


@dataclass(frozen=True)
class LoaderSettings:
    """How a :class:`LazySource` reads: ``num_workers`` worker processes (0 reads in the main process),
    ``pin_memory`` (page-locked batches, for fast copies to a GPU), ``prefetch_factor`` batches read ahead
    per worker. Workers persist for the whole run."""

    num_workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int = 2

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise DataError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise DataError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")


class _Batches(Sampler[list[int]]):
    """A batch sampler whose batches are set before each pass, so that one ``DataLoader`` (and its
    persistent workers) serves every order the run asks for."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def read_sample(dataset: MapDataset, index: int, name: str) -> tuple[Any, Any]:
    """``dataset[index]`` as an ``(input, label)`` pair; a ``__getitem__`` that raises, or returns anything
    else, is a :class:`DataError` naming the sample and ``name`` (the dataset and its split)."""
    try:
        sample = dataset[index]
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{name}: reading sample {index} raised {type(error).__name__}: {error}; fix the dataset's "
                        "__getitem__ for it") from None
    if not isinstance(sample, Sequence) or len(sample) != 2:
        raise DataError(f"{name}: sample {index} must be an (input, label) pair, got {type(sample).__name__}")
    return sample[0], sample[1]


class _Checked(MapDataset):
    """A user's dataset as the loaders read it: each sample checked as it is read (:func:`read_sample`, and
    its input's shape), so that a bad one is named with its position, not lost in the batch's collation."""

    def __init__(self, dataset: MapDataset, name: str, sample_shape: tuple[int, ...]) -> None:
        self.dataset, self.name, self.sample_shape = dataset, name, sample_shape

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y = read_sample(self.dataset, index, self.name)
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else np.shape(x)
        if shape != self.sample_shape:
            raise DataError(f"{self.name}: sample {index} has shape {shape}, expected {self.sample_shape}; make "
                            "every sample the same shape")
        return x, y


def _collate(samples: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.stack([torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
                          for x, _ in samples])
    labels = torch.as_tensor([int(y) for _, y in samples], dtype=torch.long)
    return inputs.float(), labels


def _one_line_errors(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches; a :class:`DataError` raised in a worker process (a file that cannot be read)
    comes back as one whose message is the worker's own one line, not the traceback the ``DataLoader``
    wraps it in."""
    try:
        yield from loader
    except DataError as error:
        lines = str(error).strip().splitlines()
        raise DataError(lines[-1].removeprefix("lifelong.errors.DataError: ").removeprefix("DataError: ")) from None


class LazySource:
    """A map-style dataset with its labels and the loaders that read it.

    ``targets`` (N,) are the labels (``dataset[i][1]`` must equal ``targets[i]``); ``sample_shape`` the
    shape of one input (each sample is checked as it is read, :class:`_Checked`). Reads go through one
    ``DataLoader`` per channel (``train`` for the runner's epochs, ``other`` for everything else), created
    on first use and kept (with their workers) for the source's life, so that a pass over the test sets in
    the middle of an epoch does not disturb it.
    """

    def __init__(self, dataset: MapDataset, targets: torch.Tensor, sample_shape: Sequence[int],
                 settings: LoaderSettings = LoaderSettings(), name: str = "dataset",
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.dataset = dataset
        self.targets = targets
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.settings = settings
        self.name = name
        self.transform = transform
        """Applied to every batch read (e.g. the per-channel normalisation of an ``[augment]`` table)."""
        self._samplers: dict[str, _Batches] = {}
        self._loaders: dict[str, DataLoader] = {}

    def __len__(self) -> int:
        return len(self.targets)

    def _loader(self, channel: str) -> tuple[DataLoader, _Batches]:
        if channel not in self._loaders:
            sampler = _Batches()
            workers = self.settings.num_workers
            self._samplers[channel] = sampler
            self._loaders[channel] = DataLoader(
                _Checked(self.dataset, self.name, self.sample_shape), batch_sampler=sampler, num_workers=workers,
                collate_fn=_collate,
                pin_memory=self.settings.pin_memory, persistent_workers=workers > 0,
                prefetch_factor=self.settings.prefetch_factor if workers > 0 else None)
        return self._loaders[channel], self._samplers[channel]

    def read(self, positions: torch.Tensor, batch_size: int, channel: str = "other") -> Iterator[torch.Tensor]:
        """The inputs (B, *sample_shape) of the samples at ``positions``, in order, ``batch_size`` at a
        time; each batch's labels are checked against the targets."""
        loader, sampler = self._loader(channel)
        order = positions.tolist()
        sampler.batches = [order[begin:begin + batch_size] for begin in range(0, len(order), batch_size)]
        for batch, (x, y) in zip(sampler.batches, _one_line_errors(loader), strict=True):
            expected = self.targets[torch.as_tensor(batch)]
            if not torch.equal(y, expected):
                wrong = int((y != expected).nonzero()[0])
                raise DataError(f"{self.name}: sample {batch[wrong]} has label {int(y[wrong])} but its targets entry "
                                f"is {int(expected[wrong])}; give targets that match the dataset's labels")
            yield x if self.transform is None else self.transform(x)

    def mapped(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> LazySource:
        """The same dataset read with ``transform`` applied after this source's own."""
        own = self.transform
        combined = transform if own is None else (lambda x: transform(own(x)))
        return LazySource(self.dataset, self.targets, self.sample_shape, self.settings, self.name, combined)


class LazyInputs:
    """The inputs of the samples at ``positions`` of a :class:`LazySource`, read when used.

    It stands where a tensor of inputs (N, *sample_shape) would: ``len``, ``shape``, indexing by a slice,
    a long tensor or a boolean mask (a view of fewer positions), ``to(device)`` (a no-op: the inputs are
    read batch by batch and moved then). :meth:`load` reads them all into a tensor."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, source: LazySource, positions: torch.Tensor) -> None:
        self.source = source
        self.positions = positions.long()

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.positions), *self.source.sample_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.source.sample_shape)

    def is_floating_point(self) -> bool:
        return True

    def __getitem__(self, index: slice | torch.Tensor) -> LazyInputs:
        return LazyInputs(self.source, self.positions[index])

    def to(self, *args: Any, **kwargs: Any) -> LazyInputs:
        return self

    def read(self, batch_size: int, channel: str = "other") -> Iterator[torch.Tensor]:
        """The inputs, in order, ``batch_size`` at a time (through the source's loader)."""
        return self.source.read(self.positions, batch_size, channel)

    def load(self, batch_size: int = 256) -> torch.Tensor:
        """All the inputs as one tensor (N, *sample_shape)."""
        if not len(self):
            return torch.zeros(self.shape)
        return torch.cat(list(self.read(batch_size)))


Inputs = torch.Tensor | LazyInputs
"""Inputs of a sample set: a tensor in memory, or a lazy view of a dataset."""


def input_batches(x: Inputs, batch_size: int) -> Iterator[torch.Tensor]:
    """``x`` (N, ...) in order, ``batch_size`` rows at a time, as tensors: slices of a tensor, or batches
    read from a lazy dataset. The one way whole-set passes read inputs, so they work on both."""
    if isinstance(x, LazyInputs):
        yield from x.read(batch_size)
        return
    for begin in range(0, len(x), batch_size):
        yield x[begin:begin + batch_size]


def as_tensor(x: Inputs) -> torch.Tensor:
    """``x`` as a tensor (a lazy view is read)."""
    return x.load() if isinstance(x, LazyInputs) else x


def concat_inputs(parts: Sequence[Inputs]) -> Inputs:
    """The inputs of ``parts`` one after the other: a tensor, or a lazy view when every part is a view of
    the same source (a mix of the two, or of two sources, is an error naming the fix)."""
    if all(isinstance(part, torch.Tensor) for part in parts):
        return torch.cat(list(parts))  # type: ignore[arg-type]
    sources = {id(part.source) for part in parts if isinstance(part, LazyInputs)}
    if len(sources) != 1 or not all(isinstance(part, LazyInputs) for part in parts):
        raise DataError("cannot join samples held in memory with samples of a lazy dataset (or of two lazy "
                        "datasets); build the whole stream from one dataset")
    first = parts[0]
    assert isinstance(first, LazyInputs)
    return LazyInputs(first.source, torch.cat([part.positions for part in parts]))  # type: ignore[union-attr]


def inputs_tensor(x: Inputs) -> torch.Tensor:
    """What identifies ``x`` as one tensor: the inputs themselves, or a lazy view's positions (for a
    checkpoint, or to broadcast a set over data-parallel ranks)."""
    return x.positions if isinstance(x, LazyInputs) else x


def inputs_state(x: Inputs) -> dict[str, torch.Tensor]:
    """``x`` for a checkpoint: the tensor, or a lazy view's positions."""
    return {"positions": x.positions} if isinstance(x, LazyInputs) else {"tensor": x}


def inputs_from_state(state: dict[str, torch.Tensor], like: Inputs) -> Inputs:
    """Inputs saved by :func:`inputs_state`; ``like`` (inputs of the same stream) gives a lazy view's source."""
    if "tensor" in state:
        return state["tensor"]
    if not isinstance(like, LazyInputs):
        raise DataError("a checkpoint holds positions in a lazy dataset, but the stream is held in memory; "
                        "resume with the same dataset")
    return LazyInputs(like.source, state["positions"])
