"""The cost of training one experience."""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass

import torch


@dataclass
class ExperienceCost:
    """What training one experience took."""

    seconds: float = 0.0
    """Wall time of training (evaluation excluded)."""
    samples: int = 0
    """Training samples processed, replayed samples included in the batch counted once per batch row
    of the new data (the runner counts the batch it drew)."""
    steps: int = 0
    """Optimizer steps."""
    peak_memory_mb: float = 0.0
    """Peak memory: CUDA allocator peak on GPU, the process's peak resident set size on CPU."""
    buffer_size: int = 0
    """Samples the strategy holds in memory after the experience."""
    flops: float = 0.0
    """Forward and backward floating-point operations of training: the first step's count
    (``torch.utils.flop_counter.FlopCounterMode``) per drawn sample, times the samples drawn; 0 unless
    ``optim.count_flops`` (or a FLOP budget) is on."""

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "samples_per_second": self.samples_per_second}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MiB on ``device``."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
