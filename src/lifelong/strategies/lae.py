"""LAE: an online and an offline (EMA) parameter-efficient module, ensembled at inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt, Interval
from lifelong.data.streams import Batch, Experience
from lifelong.metrics.compute import tensor_bytes
from lifelong.models.averaging import ema_step
from lifelong.strategies.base import OWN_TENSORS, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.features import restrict_to_classes
from lifelong.strategies.parts.tuning import MODEL_OWNED, TuningModules, check_tuning, substituted


@dataclass
class LAE(Strategy):
    """Learning-Accumulation-Ensemble (Gao et al., ICCV 2023, "A Unified Continual Learning Framework with
    General Parameter-Efficient Tuning"), on the LoRA or adapter modules of
    :mod:`lifelong.strategies.parts.tuning`.

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

    rank: Annotated[int, Ge(1)] = 4
    """Rank r of LoRA's ``B A`` or width of the adapter's bottleneck."""
    alpha: Annotated[float, Gt(0)] = 4.0
    """The tuning term is scaled by ``alpha / rank`` (LoRA's alpha; AdaptFormer's scale for adapters)."""
    targets: tuple[str, ...] = ("*",)
    """Glob patterns of the backbone's linear layers to tune, matched against their names inside the
    backbone (``"*"``: every ``nn.Linear``; ``"*qkv"``, ``"*fc1"`` on a ViT)."""
    module: str = "adapter"
    """The tuning module: ``adapter`` (the paper's best) or ``lora``."""
    ema_decay: Annotated[float, Interval(ge=0, lt=1)] = 0.99
    """Momentum of the offline modules' average, per optimizer step."""
    later_lr_scale: Annotated[float, Ge(0)] = 0.1
    """Learning rate of the online modules after the first experience, as a fraction of the run's."""
    offline: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    pending: bool = field(default=False, init=False, repr=False)
    """An optimizer step has changed the online modules since the offline ones last followed them."""
    current_classes: list[int] = field(default_factory=list, init=False, repr=False)
    tuning: TuningModules = field(init=False, repr=False)
    """The online modules."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_tuning(self.module, self.targets)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.tuning = TuningModules(self.module, self.rank, self.alpha, self.targets, context.seed)
        self.offline, self.pending, self.current_classes = {}, False, []

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """The online modules at the full rate in the first experience, ``later_lr_scale`` after; the head
        always at the full rate."""
        scale = 1.0 if index == 0 else self.later_lr_scale
        return ExperiencePlan(train_size=len(experiences[index].train), lr_scales=(scale, 1.0))

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.tuning.prepare(model)
        self.current_classes = sorted(experience.classes)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return self.tuning.parameter_groups(model)

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
            online = self.tuning.parameters
            ema_step([self.offline[name] for name in online], [p.detach() for p in online.values()],
                     1.0 - self.ema_decay)
        self.pending = False

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        if self.offline:
            self.accumulate()
        else:  # the first experience made the online modules: the offline ones start as their copy
            self.offline = {name: p.detach().clone() for name, p in self.tuning.parameters.items()}
            self.pending = False

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        online = self.probabilities(model, x, task)  # (B, C)
        if not self.offline:
            return online.argmax(dim=1)
        with substituted(self.tuning.parameters, self.offline):
            offline = self.probabilities(model, x, task)  # (B, C)
        return torch.maximum(online, offline).argmax(dim=1)

    def probabilities(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return restrict_to_classes(self.logits(model, x, task), self.seen_classes).softmax(dim=1)

    def memory_bytes(self) -> int:
        """The strategy's tensors beyond the model: the offline modules (the online ones are the model's)."""
        return tensor_bytes(self.state_dict(), skip=MODEL_OWNED)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.tuning.state_dict(), "offline": dict(self.offline),
                "pending": self.pending, "current_classes": list(self.current_classes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.tuning.load_state_dict(state, model)
        self.offline = {name: t.to(self.tuning.parameters[name].device) for name, t in state["offline"].items()}
        self.pending, self.current_classes = bool(state["pending"]), list(state["current_classes"])
