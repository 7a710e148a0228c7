"""LAE: an online and an offline (EMA) parameter-efficient module, ensembled at inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.averaging import ema_step
from lifelong.strategies.base import (
    OWN_TENSORS,
    Capabilities,
    ExperiencePlan,
    StrategyContext,
)
from lifelong.strategies.parts.features import restrict_to_classes
from lifelong.strategies.pet import EfficientTuning, substituted


@dataclass
class LAE(EfficientTuning):
    """Learning-Accumulation-Ensemble (Gao et al., ICCV 2023, "A Unified Continual Learning Framework with
    General Parameter-Efficient Tuning"), on the LoRA or adapter modules of :mod:`lifelong.strategies.pet`.

    Learning: the online tuning modules and the head train on each experience with cross-entropy over the
    experience's own classes (the reference code's loss on the new task's logits). Accumulation: an
    offline copy of the tuning modules, made from the online ones when the first experience ends, follows
    them by an exponential moving average after every optimizer step of the later experiences,
    ``offline <- decay * offline + (1 - decay) * online`` (the reference code's per-step ``ModelEmaV2``).
    Ensemble: a sample's class probabilities are the larger, class by class, of the softmax of the online
    and of the offline model's logits over the seen classes, and the prediction their argmax.

    Departures: the paper's adaptation-speed calibration freezes the online module for the first epochs of
    every later task; here its learning rate is ``later_lr_scale`` times the run's in every later
    experience instead (the plan's scales), as the runner's epochs are not a strategy's to split. The
    head is shared by both experts and not averaged (as in the paper). The EMA decay defaults to 0.99,
    not the paper's 0.9999, which suits its thousands of steps per task, not a few dozen.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    module: str = "adapter"
    """The tuning module: ``adapter`` (the paper's best) or ``lora``."""
    ema_decay: float = 0.99
    """Momentum of the offline modules' average, per optimizer step."""
    later_lr_scale: float = 0.1
    """Learning rate of the online modules after the first experience, as a fraction of the run's."""
    offline: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    pending: bool = field(default=False, init=False, repr=False)
    """An optimizer step has changed the online modules since the offline ones last followed them."""
    current_classes: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"strategy.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not self.later_lr_scale >= 0:
            raise ConfigError(f"strategy.later_lr_scale must be >= 0, got {self.later_lr_scale}")

    def kind(self) -> str:
        return self.module

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.offline, self.pending, self.current_classes = {}, False, []

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """The online modules at the full rate in the first experience, ``later_lr_scale`` after; the head
        always at the full rate."""
        scale = 1.0 if index == 0 else self.later_lr_scale
        return ExperiencePlan(train_size=len(experiences[index].train), lr_scales=(scale, 1.0))

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        super().before_experience(model, experience)
        self.current_classes = sorted(experience.classes)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.accumulate()
        logits = restrict_to_classes(self.logits(model, batch.x, batch.task), self.current_classes)
        return F.cross_entropy(logits, batch.y)

    def after_backward(self, model: nn.Module) -> None:
        self.pending = True  # the runner's optimizer step follows

    @torch.no_grad()
    def accumulate(self) -> None:
        """Move the offline modules towards the online ones once per optimizer step taken since the last
        call (there is at most one: this runs before each step's loss and when the experience ends)."""
        if self.pending and self.offline:
            ema_step([self.offline[name] for name in self.tuned], [p.detach() for p in self.tuned.values()],
                     1.0 - self.ema_decay)
        self.pending = False

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        if self.offline:
            self.accumulate()
        else:  # the first experience made the online modules: the offline ones start as their copy
            self.offline = {name: p.detach().clone() for name, p in self.tuned.items()}
            self.pending = False

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        online = self.probabilities(model, x, task)  # (B, C)
        if not self.offline:
            return online.argmax(dim=1)
        with substituted(self.tuned, self.offline):
            offline = self.probabilities(model, x, task)  # (B, C)
        return torch.maximum(online, offline).argmax(dim=1)

    def probabilities(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return restrict_to_classes(self.logits(model, x, task), self.seen_classes).softmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "offline": dict(self.offline), "pending": self.pending,
                "current_classes": list(self.current_classes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.offline = {name: t.to(self.tuned[name].device) for name, t in state["offline"].items()}
        self.pending, self.current_classes = bool(state["pending"]), list(state["current_classes"])
