"""Ghost Batch Normalization (Hoffer, Hubara & Soudry 2017, "Train longer, generalize better: closing
the generalization gap in large batch training of neural networks", Algorithm 1).

A large batch's statistics are less noisy than a small batch's, and that noise regularizes. Ghost BN
keeps it: in training, the batch is cut into virtual batches of ``virtual_batch_size`` samples, each
normalized by its own mean and variance; the running statistics (used at test time) are updated once
per virtual batch. With a batch no larger than the virtual batch it is plain batch normalization.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GhostBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over virtual batches of at most ``virtual_batch_size`` samples in training
    mode (the batch is cut into near-equal parts); inputs (B, C) or (B, C, L)."""

    def __init__(self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        if virtual_batch_size < 2:
            raise ValueError(f"virtual_batch_size must be >= 2 (a batch of one has no variance), "
                             f"got {virtual_batch_size}")
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.virtual_batch_size = virtual_batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or len(x) <= self.virtual_batch_size:
            return super().forward(x)
        chunks = x.tensor_split(math.ceil(len(x) / self.virtual_batch_size))  # near-equal, each >= 2 samples
        return torch.cat([super(GhostBatchNorm, self).forward(chunk) for chunk in chunks])
