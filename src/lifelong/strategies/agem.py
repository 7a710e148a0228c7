"""Averaged gradient episodic memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Stream
from lifelong.errors import ConfigError
from lifelong.strategies.rehearsal import ReservoirReplay


def project(gradient: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection of a flat gradient (P,): unchanged when ``g . g_ref >= 0``, else
    ``g - (g . g_ref / g_ref . g_ref) g_ref``, the closest vector with a non-negative dot product."""
    dot = torch.dot(gradient, reference)
    if dot >= 0:
        return gradient
    return gradient - dot / torch.dot(reference, reference).clamp_min(1e-12) * reference


@dataclass
class AGEM(ReservoirReplay):
    """Averaged GEM (Chaudhry et al., ICLR 2019, "Efficient Lifelong Learning with A-GEM"): the update
    may not increase the average loss on a batch from the episodic memory. At each step the gradient
    ``g_ref`` of the loss on a memory batch is computed; after back-propagation the new gradient ``g`` is
    projected so that ``g . g_ref >= 0``. The memory is a reservoir of the stream."""

    reference_batch_size: int = 256
    """Memory samples drawn to estimate the reference gradient (256 in the paper; here the whole memory
    of 200 by default)."""
    reference: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference_batch_size < 1:
            raise ConfigError(f"strategy.reference_batch_size must be >= 1, got {self.reference_batch_size}")

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.reference = None

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.reference = None
        if len(self.buffer):
            replay = self.buffer.sample(self.reference_batch_size)
            memory_loss = F.cross_entropy(self.logits(model, replay["x"], replay["task"]), replay["y"])
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(memory_loss, params, allow_unused=True)
            self.reference = torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                                        for p, g in zip(params, grads, strict=True)])  # (P,)
        loss = F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)
        self.buffer.add(x=batch.x, y=batch.y, task=batch.task)
        return loss

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
