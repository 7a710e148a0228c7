"""The two data structures every part of `lifelong` speaks: :class:`Experience` and :class:`Stream`.

Data live in memory as tensors (:class:`TensorSet`): a continual-learning stream on CPU is usually
small enough, and slicing tensors by index is several times faster than collating samples one by one
through a ``DataLoader``. A dataset that does not fit is a lazy view instead (``x`` a
:class:`~lifelong.data.lazy.LazyInputs`, read in batches through a ``DataLoader``): sets, experiences
and streams hold it the same way, and :meth:`TensorSet.batches` reads either kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from lifelong.data.lazy import Inputs, LazyInputs, LazySource, as_tensor, concat_inputs, input_batches
from lifelong.data.validation import check_set, check_stream_shape, check_task_classes, check_tensors
from lifelong.errors import DataError


class Batch(NamedTuple):
    """One mini-batch: inputs ``x`` (B, ...), labels ``y`` (B,) and task ids ``task`` (B,); ``raw`` is the
    inputs before the runner's training augmentation (None when there is none), what a memory stores;
    ``view`` the batch's samples as positions in the lazy dataset they were read from (None for data
    held in memory), what a memory that keeps positions stores."""

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor
    raw: torch.Tensor | None = None
    view: LazyInputs | None = None

    @property
    def stored(self) -> torch.Tensor:
        """The inputs a replay memory keeps: un-augmented (each replay is augmented afresh, as in
        Buzzega et al. 2020's DER code), the same as ``x`` without augmentation."""
        return self.x if self.raw is None else self.raw


@dataclass(frozen=True)
class TensorSet:
    """Samples: ``x`` (N, *input_shape) float (a tensor, or a lazy dataset's inputs), ``y`` (N,) long,
    ``task`` (N,) long."""

    x: Inputs
    y: torch.Tensor
    task: torch.Tensor

    def __post_init__(self) -> None:
        check_tensors(self.x, self.y, self.task)
        if self.y.ndim != 1 or self.task.ndim != 1:
            raise DataError(f"labels and task ids must be 1-D, got shapes {tuple(self.y.shape)} and {tuple(self.task.shape)}")
        if not (len(self.x) == len(self.y) == len(self.task)):
            raise DataError(f"x, y and task must have the same length, got {len(self.x)}, {len(self.y)}, {len(self.task)}")

    @classmethod
    def of(cls, x: Inputs, y: torch.Tensor, task_id: int) -> TensorSet:
        """Wrap inputs and labels that all belong to one task."""
        return cls(x, y, torch.full((len(y),), task_id, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> TensorSet:
        """The samples at ``index`` (a long tensor or boolean mask)."""
        return TensorSet(self.x[index], self.y[index], self.task[index])

    @property
    def lazy(self) -> bool:
        """Whether the inputs are a lazy dataset's, read batch by batch."""
        return isinstance(self.x, LazyInputs)

    def to(self, device: torch.device | str) -> TensorSet:
        """The samples on ``device``; host-to-GPU copies go through pinned (page-locked) memory without
        blocking, so a whole experience is copied at full bus speed once rather than batch by batch. A
        lazy set's inputs stay where the dataset is (each batch is moved when read)."""
        target = torch.device(device)
        if all(t.device == target for t in (self.y, self.task)) and (self.lazy or self.x.device == target):
            return self
        if self.lazy:
            return TensorSet(self.x, self.y.to(target), self.task.to(target))
        if target.type == "cuda" and self.x.device.type == "cpu":
            return TensorSet(*(t.pin_memory().to(target, non_blocking=True) for t in (self.x, self.y, self.task)))
        return TensorSet(self.x.to(target), self.y.to(target), self.task.to(target))

    def batch(self) -> Batch:
        """All samples as one :class:`Batch` (a lazy set's inputs are read)."""
        return Batch(as_tensor(self.x), self.y, self.task)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The samples in order, ``batch_size`` at a time: the one way a whole-set pass (evaluation,
        feature statistics, importance estimates) reads a set, in memory or lazy."""
        for begin, x in zip(range(0, len(self), batch_size), input_batches(self.x, batch_size), strict=True):
            yield Batch(x, self.y[begin:begin + batch_size], self.task[begin:begin + batch_size])

    @staticmethod
    def concat(sets: Sequence[TensorSet]) -> TensorSet:
        if not sets:
            raise DataError("cannot concatenate an empty list of sample sets")
        return TensorSet(
            concat_inputs([s.x for s in sets]), torch.cat([s.y for s in sets]), torch.cat([s.task for s in sets])
        )


@dataclass(frozen=True)
class Experience:
    """One step of a stream: what is trained on, what is tested, which classes, which task.

    ``classes`` are the labels this experience introduces (its training labels); ``task_id`` is its
    position in a task-incremental stream and is only given to the model where the stream says so
    (:attr:`Stream.task_aware`).
    """

    train: TensorSet
    test: TensorSet
    classes: tuple[int, ...]
    task_id: int
    name: str = ""
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.train) == 0:
            raise DataError(f"experience {self.task_id} ({self.name or 'unnamed'}) has an empty training set; "
                            "give it samples or drop it from the stream")


    def to(self, device: torch.device | str) -> Experience:
        """The experience with its training and test sets on ``device`` (the same object's tensors when
        they are there already)."""
        train, test = self.train.to(device), self.test.to(device)
        return self if train is self.train and test is self.test else dataclasses.replace(self, train=train, test=test)


@dataclass(frozen=True)
class Stream:
    """An ordered sequence of experiences sharing one output space of ``n_classes`` labels.

    ``task_aware`` marks a task-incremental stream: the task id of each sample is known at training
    and test time, and logits are masked to the classes of that task.

    ``objective`` says what is learned and measured (:mod:`lifelong.metrics.objectives`):
    ``"classification"`` (labels ``y``, accuracy) or ``"language_model"`` (inputs are windows of
    ``L + 1`` token ids, the model predicts each next token, measured by the validation loss; ``y`` and
    ``task`` are the domain of each window, ``n_classes`` the number of domains and ``vocab_size`` the
    tokenizer's vocabulary).
    """

    experiences: tuple[Experience, ...]
    n_classes: int
    input_shape: tuple[int, ...]
    task_aware: bool = False
    name: str = ""
    objective: str = "classification"
    vocab_size: int = 0
    document_end: int | None = None
    """A packed text stream whose attention must not cross documents (``dataset.pack_across_documents =
    false``): the end-of-document id its model masks attention at (:func:`~lifelong.models.gpt.mask_documents`);
    None: a window's tokens attend across the documents it packs."""

    def __post_init__(self) -> None:
        check_stream(self)

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, index: int) -> Experience:
        return self.experiences[index]

    @property
    def classes(self) -> tuple[int, ...]:
        """The union of the classes of all experiences, sorted."""
        return tuple(sorted({c for exp in self.experiences for c in exp.classes}))

    def task_mask(self) -> torch.Tensor | None:
        """(T, n_classes) boolean mask of the classes of each task, or None when tasks are not given."""
        if not self.task_aware:
            return None
        mask = torch.zeros(len(self.experiences), self.n_classes, dtype=torch.bool)
        for exp in self.experiences:
            mask[exp.task_id, list(exp.classes)] = True
        return mask

    def joined(self) -> Experience:
        """All training data of the stream as one experience (the i.i.d. upper bound, ``joint``)."""
        return Experience(
            train=TensorSet.concat([e.train for e in self.experiences]),
            test=TensorSet.concat([e.test for e in self.experiences]),
            classes=self.classes,
            task_id=0,
            name="joint",
        )

    def map_inputs(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> Stream:
        """The stream with ``transform`` applied to every input: at once to inputs in memory, to each
        batch read of a lazy dataset (every view of one dataset keeps sharing one source)."""
        sources: dict[int, LazySource] = {}

        def mapped(data: TensorSet) -> TensorSet:
            if not isinstance(data.x, LazyInputs):
                return TensorSet(transform(data.x), data.y, data.task)
            source = sources.setdefault(id(data.x.source), data.x.source.mapped(transform))
            return TensorSet(LazyInputs(source, data.x.positions), data.y, data.task)

        experiences = tuple(dataclasses.replace(e, train=mapped(e.train), test=mapped(e.test)) for e in self.experiences)
        return dataclasses.replace(self, experiences=experiences)

    def summary(self) -> list[dict[str, object]]:
        """One row per experience: name, task id, classes, train and test sizes (for tables)."""
        return [
            {"experience": i, "name": e.name, "task": e.task_id, "classes": list(e.classes),
             "train": len(e.train), "test": len(e.test)}
            for i, e in enumerate(self.experiences)
        ]


def check_stream(stream: Stream) -> None:
    """Every check of :mod:`lifelong.data.validation` on every experience of ``stream``."""
    check_stream_shape(stream.experiences, stream.n_classes)
    for index, experience in enumerate(stream.experiences):
        for part, data in (("train", experience.train), ("test", experience.test)):
            check_set(data.x, data.y, f"experience {index}: {part}", stream.n_classes, stream.input_shape)
        if stream.task_aware:
            check_task_classes(experience.test.y, experience.classes, index)
