"""Ghost Batch Normalization (Hoffer, Hubara & Soudry 2017, "Train longer, generalize better: closing
the generalization gap in large batch training of neural networks", Algorithm 1).

A large batch's statistics are less noisy than a small batch's, and that noise regularizes. Ghost BN
keeps it: in training, the batch is cut into virtual batches of ``virtual_batch_size`` samples, each
normalized by its own mean and variance; the running statistics (used at test time) are updated once
per virtual batch. With a batch no larger than the virtual batch it is plain batch normalization.
:class:`GhostBatchNorm` serves features (B, C) and sequences (B, C, L), :class:`GhostBatchNorm2d`
convolutional feature maps (B, C, H, W); both cut batches the same way (:class:`GhostBatchNormBase`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class GhostBatchNormBase(_BatchNorm):
    """The virtual-batch logic, placed before ``nn.BatchNorm1d`` or ``nn.BatchNorm2d`` in a subclass's
    bases: that class checks the input's dimensions and normalizes each virtual batch."""

    def __init__(self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        if virtual_batch_size < 2:
            raise ValueError(f"virtual_batch_size must be >= 2 (a batch of one has no variance), "
                             f"got {virtual_batch_size}")
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.virtual_batch_size = virtual_batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_norm = super().forward  # the next class's forward (a comprehension cannot call super())
        if not self.training or len(x) <= self.virtual_batch_size:
            return batch_norm(x)
        chunks = x.tensor_split(math.ceil(len(x) / self.virtual_batch_size))  # near-equal, each >= 2 samples
        return torch.cat([batch_norm(chunk) for chunk in chunks])


class GhostBatchNorm(GhostBatchNormBase, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over virtual batches of at most ``virtual_batch_size`` samples in training
    mode (the batch is cut into near-equal parts); inputs (B, C) or (B, C, L)."""


class GhostBatchNorm2d(GhostBatchNormBase, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over virtual batches of at most ``virtual_batch_size`` samples in training
    mode, each normalized per channel over its samples and positions; inputs (B, C, H, W)."""
