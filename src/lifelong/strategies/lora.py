"""Sequential fine-tuning of LoRA modules on a frozen backbone: the parameter-efficient baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lifelong.strategies.base import OWN_TENSORS, Capabilities
from lifelong.strategies.pet import EfficientTuning


@dataclass
class LoRA(EfficientTuning):
    """One set of LoRA modules (Hu et al., ICLR 2022) on the backbone's linear layers, shared by every
    experience and trained on each in turn with plain cross-entropy, with the head; the rest of the
    backbone stays frozen (:mod:`lifelong.strategies.pet`). Nothing guards against forgetting beyond the
    small number of trained parameters: the baseline the parameter-efficient methods (LAE) improve on."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    def kind(self) -> str:
        return "lora"
