"""Metrics: accuracy-matrix summaries (accuracy, forgetting, transfer) and training cost."""

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

__all__ = [
    "ExperienceCost", "average_incremental_accuracy", "average_incremental_accuracy_per_experience",
    "backward_transfer", "final_accuracy", "final_accuracy_pooled", "forgetting", "forward_transfer", "summary",
]
