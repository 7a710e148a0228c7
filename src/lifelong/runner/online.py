"""Online continual learning: one pass over the stream, small batches, evaluation every few samples.

An online run is an ordinary run with ``epochs = 1`` (every sample is seen once), a small batch and an
evaluation every ``eval_every_samples`` samples, from whose curve the anytime metrics of
:mod:`lifelong.metrics.online` are computed (Koh et al. 2022; Moon et al. 2023). From a config:
``optim.epochs = 1``, a small ``optim.batch_size`` and ``run.eval_every_samples``.

A real-time stream does not wait for the learner either (Ghunaim et al., CVPR 2023; ``optim.stream_rate``,
:mod:`lifelong.runner.realtime`): it brings a batch at a fixed pace, a method whose step costs k times that
trains on every k-th batch only, and every batch is predicted before any training on it, the online accuracy
of each experience's cost (``online_metric``; ``skipped`` counts the samples that passed untrained).
``train_online(..., stream_rate="naive")`` paces it by a naive step of each batch.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lifelong.config import OptimConfig
from lifelong.data.streams import Stream
from lifelong.runner.loop import RunResult, train
from lifelong.runner.results import ResultsStore
from lifelong.strategies.base import Strategy


def train_online(stream: Stream, model: nn.Module, strategy: Strategy, *, batch_size: int = 10,
                 eval_every_samples: int = 100, lr: float = 0.03, seed: int = 0, device: str = "cpu",
                 store: ResultsStore | None = None, **optim: Any) -> RunResult:
    """Train in a single pass with batches of ``batch_size``; evaluate every ``eval_every_samples`` samples.

    ``result.metrics`` gains ``a_auc`` and ``last_accuracy``; ``result.extra["curve"]`` holds the
    evaluation points. Further ``optim`` keywords go to :class:`OptimConfig` (``epochs`` is fixed to 1), e.g.
    ``stream_rate`` for a real-time stream, whose skipped samples and online accuracy each experience's cost
    records."""
    settings = OptimConfig(**{**optim, "lr": lr, "batch_size": batch_size, "epochs": 1})
    return train(stream, model, strategy, settings, seed=seed, device=device, store=store,
                 eval_every_samples=eval_every_samples)
