"""Learning without forgetting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt
from lifelong.data.streams import Batch, Experience
from lifelong.metrics.objectives import logits_of, next_token_loss
from lifelong.strategies.base import (
    BOTH_OBJECTIVES,
    Capabilities,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.distillation import Teacher, distillation


@dataclass
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2017): cross-entropy on the new data plus
    ``alpha * KD_T`` between the previous model's and the current model's logits on the classes
    seen before, computed on the new data (no memory of old samples).

    On a token stream the distillation covers the whole vocabulary at every position of the new windows
    (the previous model's next-token distributions), the form LwF takes in continual pre-training of
    language models, where there are no "old classes" to restrict it to."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True)

    alpha: Annotated[float, Ge(0)] = 1.0
    """Weight of the distillation term."""
    temperature: Annotated[float, Gt(0)] = 2.0
    """Softmax temperature of the distillation (T = 2 in the paper)."""
    teacher: Teacher = field(init=False, repr=False)
    """The model as the previous experience left it."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.teacher = Teacher()

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if self.language_model:
            return self._language_model_loss(model, batch.x)
        out = model(batch.x)  # (B, C)
        loss = F.cross_entropy(self.mask_logits(out, batch.task), batch.y)
        if self.teacher.model is not None and self.seen_classes:
            seen = self.class_index(self.seen_classes, out.device)  # (K,)
            old = self.teacher(batch.x).index_select(1, seen)  # (B, K)
            loss = loss + self.alpha * distillation(out.index_select(1, seen), old, self.temperature)
        return loss

    def _language_model_loss(self, model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy of ``windows`` (B, L + 1) plus ``alpha * KD_T`` to the previous model's
        logits (B, L, V), every position a sample of the distillation."""
        inputs = windows[:, :-1]
        out = logits_of(model(inputs))  # (B, L, V)
        loss = next_token_loss(out, windows[:, 1:])
        if self.teacher.model is not None:
            old = logits_of(self.teacher(inputs))
            loss = loss + self.alpha * distillation(out.flatten(0, 1), old.flatten(0, 1), self.temperature)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.teacher.capture(model)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "old_model": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.teacher.load_state_dict(state["old_model"], model)
