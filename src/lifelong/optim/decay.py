"""Which parameters take weight decay: a model may exempt some (biases, normalization parameters,
embeddings), and the optimizer's parameter groups are split accordingly.

Decaying a LayerNorm scale or a bias pulls it towards 0 for no regularizing benefit, and decaying an
embedding shrinks the rows of rare tokens; GPT-2's recipe (minGPT, nanoGPT) and the continual pre-training
papers (Gupta et al. 2023; Ibrahim et al. 2024) decay only the weight matrices. A model says which of its
parameters are exempt with a ``no_weight_decay() -> set[str]`` method (parameter names relative to that
module, e.g. :meth:`lifelong.models.gpt.GPT.no_weight_decay`); any module inside a wrapper may declare it.
A model that declares nothing keeps its groups exactly as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from torch import nn

SOURCE_GROUP = "source_group"
"""Key of a split group: the index of the group of ``parameter_groups()`` it came from, which a plan's
``lr_scales`` (one per such group) refers to."""


class DeclaresNoWeightDecay(Protocol):
    """A module that names its parameters exempt from weight decay."""

    def no_weight_decay(self) -> set[str]: ...


def exempt_parameters(model: nn.Module) -> set[int]:
    """The ``id`` of every parameter that a declaring module inside ``model`` (itself included) exempts."""
    exempt: set[int] = set()
    for module in model.modules():
        if hasattr(type(module), "no_weight_decay"):  # DeclaresNoWeightDecay: a class attribute, read fast
            exempt.update(id(module.get_parameter(name)) for name in module.no_weight_decay())
    return exempt


def split_weight_decay(groups: Sequence[dict[str, Any]], model: nn.Module) -> list[dict[str, Any]]:
    """``groups`` (as :meth:`Strategy.parameter_groups` gives them) with each one split in two when
    ``model`` exempts some of its parameters: the decayed ones, then the exempt ones with
    ``weight_decay = 0``; both keep the group's other keys (``lr_scale``) and carry :data:`SOURCE_GROUP`.
    A group that sets its own ``weight_decay`` is kept whole, and every group is kept as it is (no key
    added) when the model exempts none of their parameters."""
    exempt = exempt_parameters(model)
    groups = [{**group, "params": list(group["params"])} for group in groups]
    if not any(id(p) in exempt for group in groups if "weight_decay" not in group for p in group["params"]):
        return groups
    split: list[dict[str, Any]] = []
    for index, group in enumerate(groups):
        if "weight_decay" in group:
            split.append({**group, SOURCE_GROUP: index})
            continue
        decayed = [p for p in group["params"] if id(p) not in exempt]
        kept = [p for p in group["params"] if id(p) in exempt]
        if decayed:
            split.append({**group, "params": decayed, SOURCE_GROUP: index})
        if kept:
            split.append({**group, "params": kept, "weight_decay": 0.0, SOURCE_GROUP: index})
    return split
