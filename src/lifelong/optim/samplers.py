"""Which samples an epoch trains on, and in what order.

Every order is a pure function of ``(seed, experience, epoch)`` and, for :class:`HardBatchSampler`,
of the model's state at the start of the epoch, so a resumed run draws the same batches without
saving any generator state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.loader import derive_seed, epoch_order
from lifelong.data.streams import TensorSet
from lifelong.errors import ConfigError

BatchScorer = Callable[[torch.Tensor, int], torch.Tensor]
"""``(order (N,), batch_size) -> loss of each consecutive batch of the order (ceil(N / batch_size),)``."""

RS2_TAG = 0x252


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"optim.sampler_fraction must be in (0, 1], got {fraction!r}")


@dataclass(frozen=True)
class RandomSampler:
    """Every sample once per epoch, in a fresh seeded permutation."""

    def epoch_samples(self, n: int, batch_size: int) -> int:
        return n

    def order(self, n: int, seed: int, experience: int, epoch: int, batch_size: int,
              scorer: BatchScorer) -> torch.Tensor:
        return epoch_order(n, seed, experience, epoch)


@dataclass(frozen=True)
class RS2Sampler:
    """Repeated sampling of random subsets (Okanovic et al. 2023, "Repeated Random Sampling for
    Minimizing the Time-to-Accuracy of Learning"): each epoch trains on a fresh ``fraction`` of the data,
    drawn *without replacement across epochs*: the epochs walk through one permutation per round of
    the data, and a new round starts with a new permutation once every sample has been seen."""

    fraction: float = 0.5

    def __post_init__(self) -> None:
        _check_fraction(self.fraction)

    def epoch_samples(self, n: int, batch_size: int) -> int:
        return max(1, round(self.fraction * n))

    def order(self, n: int, seed: int, experience: int, epoch: int, batch_size: int,
              scorer: BatchScorer) -> torch.Tensor:
        size = self.epoch_samples(n, batch_size)
        start = epoch * size
        pieces = []
        while size > 0:
            round_index, offset = divmod(start, n)
            take = min(size, n - offset)
            permutation = epoch_order(n, derive_seed(seed, RS2_TAG), experience, round_index)
            pieces.append(permutation[offset:offset + take])
            start, size = start + take, size - take
        return torch.cat(pieces)


@dataclass(frozen=True)
class HardBatchSampler:
    """Train only on the hardest mini-batches ("Can we learn better with hard samples?", 2025): the
    epoch's seeded permutation is cut into batches, each batch's loss is measured with the model as it
    is at the start of the epoch, and only the ``fraction`` of batches with the highest loss are kept,
    in their original order. Only whole batches compete (the permutation's short remainder is left
    out of the epoch unless the data hold less than one batch), so every kept batch is a full batch
    and the epoch's length is known before the losses are: the runner plans steps and samples
    exactly."""

    fraction: float = 0.5

    def __post_init__(self) -> None:
        _check_fraction(self.fraction)

    def candidates(self, n: int, batch_size: int) -> int:
        """Batches that compete: the whole batches of ``n`` samples (one short batch when ``n`` is
        smaller than a batch)."""
        return max(1, n // batch_size)

    def kept_batches(self, n: int, batch_size: int) -> int:
        return max(1, math.ceil(self.fraction * self.candidates(n, batch_size)))

    def epoch_samples(self, n: int, batch_size: int) -> int:
        return min(n, self.kept_batches(n, batch_size) * batch_size)

    def order(self, n: int, seed: int, experience: int, epoch: int, batch_size: int,
              scorer: BatchScorer) -> torch.Tensor:
        order = epoch_order(n, seed, experience, epoch)[:self.candidates(n, batch_size) * batch_size]
        losses = scorer(order, batch_size)  # (number of candidate batches,)
        kept = torch.topk(losses, self.kept_batches(n, batch_size)).indices.sort().values
        return torch.cat([order[i * batch_size:(i + 1) * batch_size] for i in kept.tolist()])


SAMPLERS = {"random": RandomSampler, "rs2": RS2Sampler, "hard_batch": HardBatchSampler}


def build_sampler(name: str, fraction: float) -> RandomSampler | RS2Sampler | HardBatchSampler:
    """The sampler ``name`` (``random``, ``rs2`` or ``hard_batch``) keeping ``fraction`` of an epoch."""
    if name not in SAMPLERS:
        raise ConfigError(f"optim.sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    if name == "random":
        if fraction != 1.0:
            raise ConfigError(f"optim.sampler_fraction must be 1 with optim.sampler='random', got {fraction!r}; "
                              "use 'rs2' or 'hard_batch' to train on part of each epoch")
        return RandomSampler()
    return SAMPLERS[name](fraction)


@torch.no_grad()
def batch_losses(model: nn.Module, logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 data: TensorSet, order: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean cross-entropy of each consecutive batch of ``order`` (on CPU), in evaluation mode so that
    scoring leaves normalization statistics untouched. ``logits(x, task)`` gives (B, C) outputs."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = [F.cross_entropy(logits(batch.x.to(device), batch.task.to(device)), batch.y.to(device))
              for batch in data.subset(order.to(data.y.device)).batches(batch_size)]
    model.train(was_training)
    return torch.stack(losses).cpu()
