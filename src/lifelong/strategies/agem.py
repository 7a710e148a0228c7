"""Averaged gradient episodic memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReservoirMemory,
    check_memory_keeps,
)


def project(gradient: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection of a flat gradient (P,): unchanged when ``g . g_ref >= 0``, else
    ``g - (g . g_ref / g_ref . g_ref) g_ref``, the closest vector with a non-negative dot product.
    Written without a branch on the sign (``min(g . g_ref, 0)`` is 0 when no projection is needed), so
    the host never waits for the device to read it."""
    dot = torch.dot(gradient, reference).clamp(max=0.0)
    return gradient - dot / torch.dot(reference, reference).clamp_min(1e-12) * reference


@dataclass
class AGEM(Strategy):
    """Averaged GEM (Chaudhry et al., ICLR 2019, "Efficient Lifelong Learning with A-GEM"): the update
    may not increase the average loss on a batch from the episodic memory of the *earlier* experiences.
    At each step the gradient ``g_ref`` of the loss on a memory batch is computed; after
    back-propagation the new gradient ``g`` is projected so that ``g . g_ref >= 0``. The memory is a
    reservoir over the earlier experiences: an experience's samples enter it when the experience ends,
    so the memory never holds the experience being learned (the paper's episodic memory holds past
    tasks only). The projection constrains the gradient, not the update: with momentum (or Adam's
    moments) the optimizer still applies unprojected directions, so the runner warns about it; the paper
    uses plain SGD.

    Data-parallel: each rank keeps its share of the memory; the reference gradients of the ranks'
    memory batches are averaged (weighted by their sizes), so every rank projects the averaged gradient
    against the same reference."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True, projects_gradients=True)

    buffer_size: BufferSize = 200
    memory_keeps: MemoryKeeps = "samples"
    memory_budget_bytes: MemoryBudget = 0
    reference_batch_size: Annotated[int, Ge(1)] = 256
    """Memory samples drawn to estimate the reference gradient (256 in the paper; here the whole memory
    of 200 by default)."""
    memory: ReservoirMemory = field(init=False, repr=False)
    reference: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_keeps(self.memory_keeps)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)
        self.reference = None

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.reference = self.reference_gradient(model) if self.seen_classes else None
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def reference_gradient(self, model: nn.Module) -> torch.Tensor | None:
        """The gradient (P,) of the loss on a memory batch, averaged over data-parallel ranks (every
        rank calls this at the same step; a rank with an empty share weighs nothing); None when the
        memory is empty everywhere."""
        params = [p for p in model.parameters() if p.requires_grad]
        reference = torch.zeros(sum(p.numel() for p in params), device=params[0].device)
        count = 0
        if len(self.memory):  # the reference only constrains the direction: its samples are not replayed into the loss
            replay = self.memory.sample(self.reference_batch_size)
            memory_loss = F.cross_entropy(self.logits(model, self.augment(replay["x"]), replay["task"]), replay["y"])
            grads = torch.autograd.grad(memory_loss, params, allow_unused=True)
            reference = torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                                   for p, g in zip(params, grads, strict=True)])  # (P,)
            count = len(replay["y"])
        if not self.world.distributed:
            return reference if count else None
        total = float(self.world.all_reduce_sum(torch.tensor([float(count)], dtype=torch.float64))[0])
        return self.world.all_reduce_sum(reference * count) / total if total else None

    def after_backward(self, model: nn.Module) -> None:
        """Replace the gradients by their projection against the memory's reference gradient."""
        if self.reference is None:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        gradient = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in params])
        projected = project(gradient, self.reference)
        offset = 0
        for p in params:
            if p.grad is not None:
                p.grad.copy_(projected[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Offer the experience's samples (this rank's part of them), in a random order, to the memory."""
        super().after_experience(model, experience)
        part = experience.train.subset(self.world.portion(len(experience.train)))
        arrived = part.subset(torch.randperm(len(part), generator=self.local_generator))
        self.memory.offer(arrived.x, arrived.y, arrived.task)

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
