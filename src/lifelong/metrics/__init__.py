"""Metrics: accuracy-matrix summaries (accuracy, forgetting, transfer) and training cost.

The names below are imported from their modules on first use (:mod:`lifelong.lazy`), so that a command
that only reads stored metrics (``lifelong runs``) imports neither numpy nor torch.
"""

from typing import TYPE_CHECKING

from lifelong.lazy import lazy_attributes

if TYPE_CHECKING:
    from lifelong.metrics.accuracy_matrix import (
        average_incremental_accuracy,
        average_incremental_accuracy_per_experience,
        backward_transfer,
        final_accuracy,
        final_accuracy_pooled,
        forgetting,
        forward_transfer,
        summary,
    )
    from lifelong.metrics.compute import ExperienceCost

_EXPORTS = {
    **dict.fromkeys(("average_incremental_accuracy", "average_incremental_accuracy_per_experience",
                     "backward_transfer", "final_accuracy", "final_accuracy_pooled", "forgetting", "forward_transfer",
                     "summary"), "lifelong.metrics.accuracy_matrix"),
    "ExperienceCost": "lifelong.metrics.compute",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
