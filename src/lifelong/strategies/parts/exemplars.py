"""Exemplars chosen by herding, a class-balanced memory of samples that represent each class's mean
feature (iCaRL, Rebuffi et al., CVPR 2017, Algorithms 4 and 5).

After each experience every class seen so far keeps ``buffer_size // classes seen`` exemplars: a class
the experience holds is herded anew from its old exemplars and its new samples, every other class keeps
its first ones (herding order is a priority, so shrinking a set keeps its best exemplars). A class
therefore never holds two sets, also when it returns in a later experience (recurring and blurry
streams). :func:`exemplar_counts` tells the counts in advance, for a method's plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch

from lifelong.data.lazy import Inputs, inputs_from_state, inputs_state
from lifelong.data.streams import Experience, TensorSet
from lifelong.errors import ConfigError
from lifelong.strategies.parts.features import herding


def exemplar_counts(experiences: Sequence[Experience], buffer_size: int) -> list[dict[int, int]]:
    """Exemplars per class after each experience, as :meth:`HerdedExemplars.update` keeps them. Raises
    :class:`ConfigError` when the memory cannot hold one exemplar per class."""
    seen: set[int] = set()
    counts: dict[int, int] = {}
    history = []
    for index, experience in enumerate(experiences):
        seen |= set(experience.classes)
        per_class = buffer_size // len(seen)
        if per_class == 0:
            raise ConfigError(f"strategy.buffer_size={buffer_size} is smaller than the {len(seen)} classes seen "
                              f"after experience {index}; iCaRL needs at least one exemplar per class")
        arrived = Counter(experience.train.y.tolist())
        counts = {c: min(per_class, counts.get(c, 0) + arrived.get(c, 0)) for c in sorted(seen)}
        history.append(counts)
    return history


class HerdedExemplars:
    """At most ``buffer_size`` exemplars in total (not per class), herded in a feature space the method
    chooses; ``exemplars`` is None before the first :meth:`update`."""

    def __init__(self, buffer_size: int) -> None:
        self.buffer_size = buffer_size
        self.exemplars: TensorSet | None = None

    def __len__(self) -> int:
        return 0 if self.exemplars is None else len(self.exemplars)

    def update(self, experience: Experience, classes: Sequence[int],
               features: Callable[[Inputs], torch.Tensor]) -> TensorSet:
        """Herd the exemplars of ``classes`` (every class seen so far, ``experience``'s included) after
        ``experience``, herding on ``features`` (inputs (N, ...) -> features (N, D)), and return them."""
        per_class = self.buffer_size // len(classes)  # >= 1 where the method's plan checked exemplar_counts
        arrived = set(experience.train.y.tolist())
        kept = []
        for c in classes:
            old = None if self.exemplars is None else self.exemplars.subset(self.exemplars.y == c)
            if c in arrived:
                members = experience.train.subset(experience.train.y == c)
                candidates = members if old is None else TensorSet.concat([old, members])
                kept.append(candidates.subset(herding(features(candidates.x), per_class)))
            elif old is not None and len(old):
                kept.append(old.subset(torch.arange(min(per_class, len(old)))))
        self.exemplars = TensorSet.concat(kept)
        return self.exemplars

    def state_dict(self) -> dict[str, object] | None:
        """The exemplars (inputs of a lazy dataset as their positions in it), or None before any."""
        if self.exemplars is None:
            return None
        return {"x": inputs_state(self.exemplars.x), "y": self.exemplars.y, "task": self.exemplars.task}

    def load_state_dict(self, state: dict[str, object] | None, like: Inputs) -> None:
        """Restore :meth:`state_dict`; ``like`` (inputs of the same stream) gives positions their dataset."""
        self.exemplars = None if state is None else TensorSet(inputs_from_state(state["x"], like),  # type: ignore[arg-type]
                                                              state["y"], state["task"])  # type: ignore[arg-type]
