"""Sequential fine-tuning of bottleneck adapters on a frozen backbone: the parameter-efficient baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lifelong.strategies.base import OWN_TENSORS, Capabilities
from lifelong.strategies.pet import EfficientTuning


@dataclass
class Adapter(EfficientTuning):
    """One set of sequential bottleneck adapters (Houlsby et al., ICML 2019) after the backbone's linear
    layers, shared by every experience and trained on each in turn with plain cross-entropy, with the
    head; the rest of the backbone stays frozen (:mod:`lifelong.strategies.pet`). The adapter analogue of
    :class:`~lifelong.strategies.lora.LoRA`."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    def kind(self) -> str:
        return "adapter"
