"""Learning without forgetting."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.metrics.objectives import logits_of, next_token_loss
from lifelong.strategies.base import (
    BOTH_OBJECTIVES,
    Capabilities,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.distillation import distillation


@dataclass
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2017): cross-entropy on the new data plus
    ``alpha * KD_T`` between the previous model's and the current model's logits on the classes
    seen before, computed on the new data (no memory of old samples).

    On a token stream the distillation covers the whole vocabulary at every position of the new windows
    (the previous model's next-token distributions), the form LwF takes in continual pre-training of
    language models, where there are no "old classes" to restrict it to."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True)

    alpha: float = 1.0
    """Weight of the distillation term."""
    temperature: float = 2.0
    """Softmax temperature of the distillation (T = 2 in the paper)."""
    old_model: nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"strategy.alpha must be >= 0, got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"strategy.temperature must be > 0, got {self.temperature}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.old_model = None

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if self.language_model:
            return self._language_model_loss(model, batch.x)
        out = model(batch.x)
        loss = F.cross_entropy(self.mask_logits(out, batch.task), batch.y)
        if self.old_model is not None and self.seen_classes:
            seen = self.class_index(self.seen_classes, out.device)  # (K,)
            with torch.no_grad():
                old = self.old_model(batch.x).index_select(1, seen)
            loss = loss + self.alpha * distillation(out.index_select(1, seen), old, self.temperature)
        return loss

    def _language_model_loss(self, model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy of ``windows`` (B, L + 1) plus ``alpha * KD_T`` to the previous model's
        logits (B, L, V), every position a sample of the distillation."""
        inputs = windows[:, :-1]
        out = logits_of(model(inputs))  # (B, L, V)
        loss = next_token_loss(out, windows[:, 1:])
        if self.old_model is not None:
            with torch.no_grad():
                old = logits_of(self.old_model(inputs))
            loss = loss + self.alpha * distillation(out.flatten(0, 1), old.flatten(0, 1), self.temperature)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.old_model = copy.deepcopy(model).eval().requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        old = None if self.old_model is None else self.old_model.state_dict()
        return {**super().state_dict(), "old_model": old}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        if state["old_model"] is not None:
            self.old_model = copy.deepcopy(model).eval().requires_grad_(False)
            self.old_model.load_state_dict(state["old_model"])
