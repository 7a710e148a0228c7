"""Gradient Projection Memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.streams import Batch, Experience
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.subspaces import LayerSubspaces, check_layer_thresholds, representation_sample


@dataclass
class GPM(Strategy):
    """Gradient Projection Memory (Saha, Garg & Roy, ICLR 2021, "Gradient Projection Memory for Continual
    Learning"; official code ``sahagobinda/GPM``): after each experience, every linear and convolution layer of
    the model (backbone and head) stores an orthonormal basis of the inputs the experience fed it; later
    experiences update each layer only orthogonally to its basis, ``G <- G - G M M^T``, so the layer's outputs
    on the old inputs stay put (:mod:`lifelong.strategies.parts.subspaces`). The basis grows by the fewest new
    directions (orthogonal to the stored ones) whose energy, added to the energy the stored basis already
    captures, reaches the layer's threshold of the representation's energy (Eqs. 5, 8-9), computed on
    ``samples`` training samples of the experience. It needs no task id: with one shared head it serves a
    plain domain-incremental stream (the paper's permuted MNIST). In a stream that gives task ids, the head
    rows of classes no finished experience trained stay free (the paper's separate heads, which it never
    projects); the head is the model's backbone/head split (:func:`~lifelong.models.nets.split_model`), so
    an ``nn.Sequential`` ending in a linear layer has one too.

    Thresholds: ``threshold`` for every layer, raised by ``threshold_increment`` per finished experience
    (the paper's CIFAR-100 schedule 0.97 + 0.003 per task, the default here), or one per layer with
    ``layer_thresholds`` (its permuted-MNIST MLP: 0.95 on the first layer, 0.99 on the others, no increment;
    5-datasets: 0.965).

    Normalization: the scales and shifts of normalization layers are frozen after the first experience, as
    the official code does with its BatchNorm parameters. That code builds its BatchNorm layers with
    ``track_running_stats=False``: they normalize by the statistics of each batch, in training and at test
    time alike, and keep none. ``batch_norm_statistics=True`` does the same with the model's BatchNorm
    layers (:func:`~lifelong.strategies.parts.subspaces.batch_statistics`); the default (False) leaves them as
    the model has them, whose running statistics then follow each new experience's data, no gradient
    passing through them.

    Departures from the official code: biases are not left out or frozen (its networks have none): a
    layer's bias is the weight of a constant input 1, so ``[W b]`` is projected over the inputs ``[x; 1]``,
    which keeps the old outputs exactly. The basis is computed from the Gram matrix of the representations
    in float64 rather than by an SVD of the matrix itself (the same spectrum), over every patch of the
    ``samples`` images for a convolution (the code subsamples the patches of the first layers). The first
    basis takes the fewest directions *reaching* the threshold (Eq. 5 as written; the code takes one
    fewer, those strictly below it). The code builds a plain SGD optimizer at each task (and its CIFAR
    scripts keep the epoch of the best validation loss and halve the learning rate on plateaus); here the
    runner's optimizer and schedule apply, and the projection constrains the gradient, not the update:
    momentum, Adam's moments and weight decay still move weights inside the bases, so the runner warns about
    momentum (the paper uses plain SGD).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(projects_gradients=True)

    threshold: Annotated[float, Interval(gt=0, le=1)] = 0.97
    """Fraction of a representation's energy the basis must capture after the first experience (epsilon)."""
    threshold_increment: Annotated[float, Ge(0)] = 0.003
    """Added to the thresholds for each later experience (capped at 1)."""
    layer_thresholds: tuple[float, ...] = ()
    """One threshold per projected layer, in the model's order, in place of ``threshold`` (empty: none)."""
    samples: Annotated[int, Ge(1)] = 125
    """Training samples of an experience whose layer inputs make its representation (125 in the paper's
    CIFAR-100 runs, 300 in its permuted-MNIST ones)."""
    batch_norm_statistics: bool = False
    """Normalize with every batch's own statistics in BatchNorm layers, in training and evaluation (the
    official code's ``track_running_stats=False``)."""
    subspaces: LayerSubspaces = field(init=False, repr=False)
    """Each layer's input basis (d, K), orthonormal columns, by module name (made at :meth:`setup`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.layer_thresholds = check_layer_thresholds(self.layer_thresholds)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.subspaces = LayerSubspaces(self.threshold, self.threshold_increment, self.task_mask is not None,
                                        self.layer_thresholds, self.batch_norm_statistics)

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        with self.subspaces.normalization(model):
            return super().logits(model, x, task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)

    def after_backward(self, model: nn.Module) -> None:
        """Project each layer's gradient off its whole basis; freeze every other parameter."""
        self.subspaces.project(model, self.subspaces.bases, self.seen_classes)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Grow every layer's basis with the inputs of ``samples`` of the experience's training samples."""
        super().after_experience(model, experience)
        batch = representation_sample(model, experience.train, self.samples, self.generator)
        self.subspaces.grow(model, lambda: self.logits(model, batch.x, batch.task))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.subspaces.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.subspaces.load(state)
