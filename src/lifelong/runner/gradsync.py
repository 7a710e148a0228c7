"""The runner's backward pass and how it averages gradients over data-parallel ranks.

Three ways, chosen by :func:`gradient_sync` from the world and :class:`Parallelism`:

* :class:`Backward`: ``loss.backward()`` alone, in one process, or when the model is sharded with
  FSDP2 (``fully_shard``), whose own backward hooks reduce-scatter and average the gradients.
* :class:`AllReduceAfter`: backward, then one all-reduce of every gradient in a flat buffer
  (:meth:`lifelong.world.World.average_gradients`); ``parallel.overlap_grad_sync = False``.
* :class:`OverlappedAllReduce` (the default when data-parallel): the gradients are cut into buckets
  and each bucket's asynchronous all-reduce starts from a post-accumulate-grad hook as soon as its last
  gradient is computed, so communication overlaps the rest of the backward pass; every bucket is
  waited for, and divided by the world size, before backward returns to the runner. This is the
  bucketing of PyTorch's DistributedDataParallel (Li et al. 2020, "PyTorch Distributed: Experiences on
  Accelerating Data Parallel Training", VLDB; section 3.2.3): parameters in reverse registration order
  (the order backward tends to produce their gradients), ~25 MB buckets, launched in bucket order so
  that every rank issues the same collectives in the same order whatever order its hooks fire in.

Why not ``torch.nn.parallel.DistributedDataParallel`` itself: its reducer is armed by the wrapper's
forward, so it must see exactly one forward per backward, while strategies call the model many times
per step (a replayed batch, a teacher's logits, a reference gradient with ``autograd.grad`` in
A-GEM, a backward of their own inside ``observe`` in the feature methods) and call ``model.backbone``
directly, bypassing the wrapper; it renames every parameter ``module.*``, which the regularisers that
index parameters by name would break; and its ``find_unused_parameters`` pays a graph traversal each
step where here a missing gradient is simply reduced as zero. The hooks below are armed only around
the runner's own ``loss.backward()``, so what a strategy differentiates inside ``observe`` is never
communicated, and the result is exactly the plain all-reduce's (the same sums, element by element).

Departures from DDP: buckets are not rebuilt from the order gradients arrived in during the first
step (DDP does, with a broadcast of rank 0's order); the first bucket has the configured size (DDP
makes it 1 MB); gradients are copied into the bucket and back rather than being views of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from lifelong.errors import TrainingError
from lifelong.runner.distributed import Parallelism
from lifelong.world import World

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle


class Backward:
    """``loss.backward()`` and nothing else: one process, or a sharded model that reduces itself."""

    def __call__(self, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        torch.autograd.backward(loss)

    def close(self) -> None:
        """Release what the synchronisation holds on the model (hooks)."""


class AllReduceAfter(Backward):
    """Backward, then every gradient averaged over ranks with one all-reduce."""

    def __init__(self, world: World) -> None:
        self.world = world

    def __call__(self, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        torch.autograd.backward(loss)
        self.world.average_gradients(params)


@dataclass
class _Bucket:
    """Parameters whose gradients are all-reduced together, in one flat buffer."""

    params: list[nn.Parameter]
    flat: torch.Tensor
    views: list[torch.Tensor]
    """Each parameter's part of ``flat``, in its shape."""
    arrived: set[int]
    """Ids of the parameters whose gradient this backward has produced."""
    handle: dist.Work | None = None

    @classmethod
    def of(cls, params: list[nn.Parameter]) -> _Bucket:
        flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
        offsets = [0, *itertools.accumulate(p.numel() for p in params)]
        return cls(params, flat, [flat[a:b].view_as(p) for a, b, p in zip(offsets, offsets[1:], params)], set())


class OverlappedAllReduce(Backward):
    """Bucketed asynchronous all-reduce started from post-accumulate-grad hooks (see the module's docstring).

    The buckets are built for the trainable parameters the runner passes, and rebuilt whenever that
    list changes (a new optimizer's groups, a strategy freezing a part). A parameter whose gradient
    never arrives (unused by this batch, on this rank) is reduced as zero when backward ends, as
    :meth:`~lifelong.world.World.average_gradients` does."""

    def __init__(self, world: World, model: nn.Module, bucket_mb: float = 25.0) -> None:
        self.world, self.model = world, model
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.params: list[nn.Parameter] = []
        self.buckets: list[_Bucket] = []
        self.hooks: list[RemovableHandle] = []
        self.armed = False
        self.next = 0
        """Index of the first bucket not launched yet: buckets are launched in order."""

    def __call__(self, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        trainable = [p for p in params if p.requires_grad]
        if len(trainable) != len(self.params) or any(a is not b for a, b in zip(trainable, self.params, strict=True)):
            self._rebuild(trainable)
        for bucket in self.buckets:
            bucket.arrived.clear()
        self.next, self.armed = 0, True
        try:
            torch.autograd.backward(loss)
        finally:
            self.armed = False
        self._launch()
        for bucket in self.buckets:
            assert bucket.handle is not None
            bucket.handle.wait()
            bucket.handle = None
            bucket.flat /= self.world.size
            for p, view in zip(bucket.params, bucket.views, strict=True):
                if p.grad is None:
                    p.grad = view.clone()
                else:
                    p.grad.copy_(view)

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks, self.buckets, self.params = [], [], []

    def _rebuild(self, trainable: list[nn.Parameter]) -> None:
        """Buckets of at most ``bucket_bytes`` (one dtype and device each) over ``trainable`` in reverse
        registration order (the model's parameters first, then any others in the order given)."""
        self.close()
        wanted = {id(p) for p in trainable}
        registered = [p for p in self.model.parameters() if id(p) in wanted]
        seen = {id(p) for p in registered}
        ordered = [*registered, *(p for p in trainable if id(p) not in seen)][::-1]
        groups: list[list[nn.Parameter]] = []
        size = 0
        for p in ordered:
            nbytes = p.numel() * p.element_size()
            last = groups[-1][-1] if groups else None
            if last is None or size + nbytes > self.bucket_bytes or (last.dtype, last.device) != (p.dtype, p.device):
                groups.append([])
                size = 0
            groups[-1].append(p)
            size += nbytes
        self.buckets = [_Bucket.of(group) for group in groups]
        for index, bucket in enumerate(self.buckets):
            for p in bucket.params:
                # torch leaves the hook registration unannotated
                self.hooks.append(p.register_post_accumulate_grad_hook(self._hook(index)))  # type: ignore[no-untyped-call]
        self.params = trainable

    def _hook(self, index: int) -> Callable[[torch.Tensor], None]:
        """The hook of bucket ``index``'s parameters: counts them in, and launches when the bucket is complete."""
        def ready(p: torch.Tensor) -> None:
            if not self.armed:  # a backward a strategy runs inside observe: not communicated
                return
            bucket = self.buckets[index]
            if id(p) in bucket.arrived:  # its bucket may be on its way already, with the first part
                raise TrainingError("a parameter's gradient was accumulated twice in one backward pass (reentrant "
                                    "checkpointing?); set run.overlap_grad_sync=false")
            bucket.arrived.add(id(p))
            if len(bucket.arrived) == len(bucket.params) and index == self.next:
                self._launch(complete_only=True)
        return ready

    def _launch(self, complete_only: bool = False) -> None:
        """Start the all-reduce of the buckets from ``next`` on, in order (with ``complete_only``, up to
        the first whose gradients are not all there), each with its gradients as they are (zero for a
        parameter without one)."""
        while self.next < len(self.buckets):
            bucket = self.buckets[self.next]
            if complete_only and len(bucket.arrived) < len(bucket.params):
                return
            for p, view in zip(bucket.params, bucket.views, strict=True):
                if p.grad is None:
                    view.zero_()
                else:
                    view.copy_(p.grad)
            bucket.handle = dist.all_reduce(bucket.flat, op=dist.ReduceOp.SUM, async_op=True)
            self.next += 1


def gradient_sync(world: World, model: nn.Module, parallel: Parallelism) -> Backward:
    """The backward pass of a run of ``world`` with these settings."""
    if not world.distributed or parallel.shard != "none":
        return Backward()
    if parallel.overlap_grad_sync:
        return OverlappedAllReduce(world, model, parallel.bucket_mb)
    return AllReduceAfter(world)
