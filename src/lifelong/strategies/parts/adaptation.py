"""First-session adaptation of a backbone that is frozen afterwards (NCM, FeTrIL, RanPAC hold one).

The backbone is either trained with cross-entropy on the first ``adapt_experiences`` experiences,
merged into one session ("first-session adaptation", Panos et al. 2023), or loaded from a pretrained
file (``backbone_path``), or both. Afterwards it is never trained again: the plan of every later
experience declares no training, so the runner takes no gradient step (and builds no optimizer,
sampler order or schedule for it), and the method only fits its classifier on the features of the data
:meth:`FirstSessionAdaptation.after_experience` hands it.

Data-parallel: adaptation trains on the same merged session on every rank (the runner shards it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.models.nets import split_model
from lifelong.strategies.base import Capabilities, ExperiencePlan
from lifelong.strategies.parts.backbones import load_backbone


def adaptation_capabilities(capabilities: Capabilities, adapt_experiences: int) -> Capabilities:
    """``capabilities`` of a method that trains its backbone on its first ``adapt_experiences``
    experiences: ``model.freeze`` would contradict any adaptation, so it is refused unless there is none."""
    if adapt_experiences == 0:
        return capabilities
    return capabilities.with_(freeze=False, freeze_refusal=(
        f"contradicts strategy.adapt_experiences={adapt_experiences} ({{name}} trains its backbone on its "
        "first experiences); set strategy.adapt_experiences=0 to keep the loaded backbone as it is"))


class FirstSessionAdaptation:
    """The backbone's progress through the stream: loaded before the first experience, trained on the
    first ``adapt_experiences`` experiences merged into one session, then frozen."""

    def __init__(self, adapt_experiences: int, backbone_path: str) -> None:
        self.adapt_experiences, self.backbone_path = adapt_experiences, backbone_path
        self.experience_index = 0
        """Experiences finished so far."""
        self.data: list[TensorSet] = []
        """The training sets of the adaptation experiences, one per experience (the stream's own)."""

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """The first ``adapt_experiences`` experiences train on everything seen so far (one merged
        session); the later ones take no gradient step."""
        if index >= self.adapt_experiences:
            return ExperiencePlan(train_size=0)
        return ExperiencePlan(train_size=sum(len(e.train) for e in experiences[: index + 1]))

    def before_experience(self, model: nn.Module) -> None:
        """Load the pretrained backbone, if any, before the first experience."""
        if self.experience_index == 0 and self.backbone_path:
            load_backbone(split_model(model)[0], self.backbone_path)

    def training_set(self, experience: Experience) -> TensorSet:
        """The merged session: every adaptation experience's training set up to ``experience``."""
        # one set per finished experience; a checkpoint taken inside this one already holds it as well
        del self.data[self.experience_index:]
        self.data.append(experience.train)
        return TensorSet.concat(self.data)

    def after_experience(self, experience: Experience) -> TensorSet | None:
        """Count ``experience`` as finished; the data whose classes the method's classifier now learns
        from the frozen backbone's features: the merged session when the backbone has just become final,
        each later experience's training set, None while the backbone still adapts."""
        self.experience_index += 1
        if self.experience_index == self.adapt_experiences and self.data:
            merged, self.data = TensorSet.concat(self.data), []
            return merged
        if self.experience_index > self.adapt_experiences:
            return experience.train
        return None

    def memory_size(self) -> int:
        return sum(len(data) for data in self.data)

    def state_dict(self) -> dict[str, Any]:
        """The number of adaptation experiences held: their data is the stream's, so a checkpoint need
        not copy it."""
        return {"experience_index": self.experience_index, "adaptation_experiences": len(self.data)}

    def load_state_dict(self, state: dict[str, Any], stream: Stream) -> None:
        self.experience_index = int(state["experience_index"])
        self.data = [e.train for e in stream.experiences[: int(state["adaptation_experiences"])]]
