"""Dark Experience Replay: DER and DER++, one method registered twice.

DER is DER++ without its replayed-label term (Buzzega et al. 2020 present DER++ as DER plus that term):
one definition, :func:`dark_experience_replay`, makes both classes. DER's ``beta`` is fixed at 0 and is
not a setting (``strategy.beta`` is refused for ``der``); DER++ exposes it. Both subclass
:class:`~lifelong.strategies.base.Strategy` directly, and neither subclasses the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch
from lifelong.models.norms import forward_with_tasks
from lifelong.strategies.base import (
    Capabilities,
    Strategy,
    StrategyContext,
    named_variant,
)
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


def dark_experience_replay(name: str, doc: str, beta_default: Any) -> type[Strategy]:
    """The class ``name`` of Dark Experience Replay, its ``beta`` field declared as ``beta_default`` says: a
    default (a setting), or a ``dataclasses.field(init=False)`` (a constant). Each call defines the
    class anew, so each variant is its own direct subclass of ``Strategy``."""

    @dataclass
    class DarkExperienceReplay(Strategy):
        CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

        buffer_size: BufferSize = 200
        replay_batch_size: ReplayBatchSize = 0
        memory_keeps: MemoryKeeps = "samples"
        memory_budget_bytes: MemoryBudget = 0
        alpha: Annotated[float, Ge(0)] = 0.2
        """Weight of the logit-matching term (0.2 for Seq-MNIST with a memory of 200 in the paper)."""
        beta: Annotated[float, Ge(0)] = beta_default
        """Weight of the replayed-label cross-entropy (DER++: 1.0 for Seq-MNIST with a memory of 200 in the
        paper; DER: 0, no second replayed batch)."""
        memory: ReservoirMemory = field(init=False, repr=False)
        """A reservoir of inputs, labels and the logits the model gave them when they arrived."""

        def __post_init__(self) -> None:
            super().__post_init__()
            check_memory_keeps(self.memory_keeps)

        def setup(self, context: StrategyContext) -> None:
            super().setup(context)
            self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)

        def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
            matching = labels = None
            if len(self.memory):  # drawn before the new batch enters the memory
                count = self.replay_batch_size or len(batch.y)
                replay = self.memory.replay(count)
                matching = F.mse_loss(forward_with_tasks(model, replay["x"], replay["task"]), replay["logits"])
                if self.beta:  # DER++: a second, independent draw, learned from its labels
                    replay = self.memory.replay(count)
                    labels = F.cross_entropy(self.logits(model, replay["x"], replay["task"]), replay["y"])
            out = forward_with_tasks(model, batch.x, batch.task)  # (B, C), stored unmasked
            loss = F.cross_entropy(self.mask_logits(out, batch.task), batch.y)
            self.memory.remember(batch, logits=out.detach())
            if matching is not None:
                loss = loss + self.alpha * matching
            if labels is not None:
                loss = loss + self.beta * labels
            return loss

        def memory_size(self) -> int:
            return len(self.memory)

        def state_dict(self) -> dict[str, Any]:
            return {**super().state_dict(), "buffer": self.memory.state_dict()}

        def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
            super().load_state_dict(state, model)
            self.memory.load_state_dict(state["buffer"])

    return named_variant(DarkExperienceReplay, name, doc)


DER = dark_experience_replay(
    "DER", beta_default=field(default=0.0, init=False, repr=False),  # fixed: not a setting of DER
    doc="""Dark Experience Replay (Buzzega et al., NeurIPS 2020): cross-entropy on the new batch plus ``alpha``
    times the mean squared error between the current logits and the stored ones of a batch replayed from a
    reservoir memory of samples with the logits they had when they arrived; matching logits rather than
    labels keeps the old function's dark knowledge along the whole optimisation path.""")
DERpp = dark_experience_replay(
    "DERpp", beta_default=1.0,
    doc="""DER++ (Buzzega et al., NeurIPS 2020): DER's logit matching plus ``beta`` times cross-entropy on the
    labels of a second, independently drawn replayed batch, which corrects stored logits that were recorded
    before their class was well learned.""")
