"""Sequential fine-tuning of LoRA modules or bottleneck adapters on a frozen backbone: the parameter-efficient
baseline, registered as ``lora`` and ``adapter``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt
from lifelong.data.streams import Batch, Experience
from lifelong.metrics.compute import tensor_bytes
from lifelong.strategies.base import OWN_TENSORS, Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.tuning import MODEL_OWNED, TuningModules, check_tuning


def sequential_tuning(name: str, default_module: str, summary: str) -> type[Strategy]:
    """The sequential-tuning strategy whose ``module`` defaults to ``default_module``, as a class named
    ``name`` directly below :class:`Strategy`, with ``summary`` as its docstring. LoRA and adapters differ
    in the module alone, so one definition serves both registrations; each is a class of its own so that
    a configuration's ``strategy.name`` chooses the module, and ``lifelong strategies``, the stored
    configuration and error messages name the registration that was asked for."""

    @dataclass
    class SequentialTuning(Strategy):
        CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

        rank: Annotated[int, Ge(1)] = 4
        """Rank r of LoRA's ``B A`` or width of the adapter's bottleneck."""
        alpha: Annotated[float, Gt(0)] = 4.0
        """The tuning term is scaled by ``alpha / rank`` (LoRA's alpha; AdaptFormer's scale for adapters)."""
        targets: tuple[str, ...] = ("*",)
        """Glob patterns of the backbone's linear layers to tune, matched against their names inside the
        backbone (``"*"``: every ``nn.Linear``; ``"*qkv"``, ``"*fc1"`` on a ViT)."""
        module: str = default_module
        """The tuning module: ``lora`` or ``adapter`` (:mod:`lifelong.strategies.parts.tuning`)."""
        tuning: TuningModules = field(init=False, repr=False)

        def __post_init__(self) -> None:
            super().__post_init__()
            check_tuning(self.module, self.targets)

        def setup(self, context: StrategyContext) -> None:
            super().setup(context)
            self.tuning = TuningModules(self.module, self.rank, self.alpha, self.targets, context.seed)

        def before_experience(self, model: nn.Module, experience: Experience) -> None:
            self.tuning.prepare(model)

        def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
            return self.tuning.parameter_groups(model)

        def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
            return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

        def memory_bytes(self) -> int:
            """The strategy's tensors beyond the model: none, the tuning modules are the model's."""
            return tensor_bytes(self.state_dict(), skip=MODEL_OWNED)

        def state_dict(self) -> dict[str, Any]:
            return {**super().state_dict(), **self.tuning.state_dict()}

        def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
            super().load_state_dict(state, model)
            self.tuning.load_state_dict(state, model)

    SequentialTuning.__name__ = SequentialTuning.__qualname__ = name
    SequentialTuning.__doc__ = summary
    return SequentialTuning


LoRA = sequential_tuning("LoRA", "lora", """One set of LoRA modules (Hu et al., ICLR 2022) on the backbone's
    linear layers, shared by every experience and trained on each in turn with plain cross-entropy, with the
    head; the rest of the backbone stays frozen (:mod:`lifelong.strategies.parts.tuning`). Nothing guards
    against forgetting beyond the small number of trained parameters: the baseline the parameter-efficient
    methods (LAE) improve on.""")

Adapter = sequential_tuning("Adapter", "adapter", """One set of sequential bottleneck adapters (Houlsby et al.,
    ICML 2019) after the backbone's linear layers, shared by every experience and trained on each in turn with
    plain cross-entropy, with the head; the rest of the backbone stays frozen
    (:mod:`lifelong.strategies.parts.tuning`). The adapter analogue of :data:`LoRA`.""")
