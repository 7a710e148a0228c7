"""Logit replay (Dark Experience Replay): the shared mechanics of ``der`` and ``derpp``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.rehearsal import ReservoirReplay


@dataclass
class LogitReplay(ReservoirReplay):
    """Abstract: a reservoir memory of inputs, labels and the logits the model gave them when they
    arrived (Buzzega et al., NeurIPS 2020). :meth:`logit_matching` is the ``alpha`` term of DER: the
    mean squared error between today's logits and the stored ones on a replayed batch; matching logits
    rather than labels keeps the old function's dark knowledge along the whole optimisation path."""


    alpha: float = 0.2
    """Weight of the logit-matching term (0.2 for Seq-MNIST with a memory of 200 in the paper)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0:
            raise ConfigError(f"strategy.alpha must be >= 0, got {self.alpha}")

    def new_data_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Cross-entropy on the new batch; its logits (B, C) are offered to the memory."""
        out = model(batch.x)  # (B, C)
        loss = F.cross_entropy(self.mask_logits(out, batch.task), batch.y)
        self.remember(batch, logits=out.detach())
        return loss

    def logit_matching(self, model: nn.Module, count: int) -> torch.Tensor:
        """``alpha * ||model(x_m) - z_m||^2`` (mean over the batch and classes) on a replayed batch
        (``replay_batch_size`` rows, or ``count``)."""
        replay = self.replay(count)
        return self.alpha * F.mse_loss(model(replay["x"]), replay["logits"])
