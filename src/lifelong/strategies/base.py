"""The strategy interface: how the loss of a batch is computed and what is remembered between experiences.

A strategy never steps the optimizer: the runner owns backward, clipping, the optimizer step and the
learning-rate schedule, so every strategy gets LR scaling, LARS/LAMB, budgets and mixed precision
for free. Hyperparameters are dataclass fields of the concrete strategy; learned state is created in
the hooks, never in ``__init__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.world import World


class Strategy(ABC):
    """Base class of every continual-learning method.

    The runner calls, in order: :meth:`setup` once per stream, then for each experience
    :meth:`before_experience`, :meth:`training_set`, :meth:`observe` for every batch (the runner
    back-propagates the returned loss and steps), :meth:`after_experience`; evaluation calls
    :meth:`predict`.
    """

    #: True for the offline upper bound: the runner trains once on the union of the stream.
    joint: ClassVar[bool] = False
    #: True when the method stays correct in data-parallel training (each rank sees a shard of every
    #: experience and gradients are averaged): its memory is split by :attr:`world` and any state
    #: estimated from data is averaged over ranks. The runner refuses the others when distributed.
    supports_distributed: ClassVar[bool] = False
    #: This process among the data-parallel ranks; set by the runner before :meth:`setup`.
    world: World = World()

    task_mask: torch.Tensor | None
    n_classes: int
    seen_classes: list[int]
    generator: torch.Generator

    def setup(self, stream: Stream, seed: int) -> None:
        """Reset learned state for a new stream: classes, task mask and the strategy's own generator."""
        self.task_mask = stream.task_mask()
        self.n_classes = stream.n_classes
        self.seen_classes = []
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 0x5EED))

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Called before training on ``experience``; the default does nothing."""

    def training_set(self, experience: Experience) -> TensorSet:
        """The samples the runner draws batches from for ``experience`` (default: its training set)."""
        return experience.train

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups; each may carry ``lr_scale``, a multiplier of the run's learning
        rate (e.g. a slow backbone, SLCA). Default: every trainable parameter at the full rate."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]

    @abstractmethod
    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The training loss (a scalar tensor with a graph) for one batch of the current experience."""

    def after_backward(self, model: nn.Module) -> None:
        """Called once the runner has back-propagated :meth:`observe`'s loss, before clipping and the
        optimizer step: the place to read or rewrite ``p.grad`` (gradient projection, A-GEM; path
        integrals, SI). The default does nothing."""

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Called after training on ``experience``; the default records its classes as seen."""
        self.remember_classes(experience)

    def remember_classes(self, experience: Experience) -> None:
        self.seen_classes = sorted(set(self.seen_classes) | set(experience.classes))

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """``model(x)`` (B, C), masked to each sample's task classes when the stream gives task ids."""
        return self.mask_logits(model(x), task)

    def mask_logits(self, out: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) with the classes outside each sample's task set to the lowest value."""
        if self.task_mask is None:
            return out
        mask = self.task_mask.to(out.device)[task]  # (B, C)
        return out.masked_fill(~mask, torch.finfo(out.dtype).min)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Predicted labels (B,); methods that classify differently (nearest class mean) override this."""
        return self.logits(model, x, task).argmax(dim=1)

    def memory_size(self) -> int:
        """Samples held in memory (replay buffers, exemplars); 0 for memory-free methods."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        """Learned state as plain tensors and numbers (loadable with ``torch.load(weights_only=True)``)."""
        return {"seen_classes": list(self.seen_classes), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore :meth:`state_dict` after :meth:`setup`; ``model`` is the restored model, a template
        for strategies that keep a copy of an earlier model."""
        self.seen_classes = list(state["seen_classes"])
        self.generator.set_state(state["generator"])
