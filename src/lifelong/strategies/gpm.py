"""Gradient Projection Memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.streams import Batch, Experience
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.subspaces import LayerSubspaces, representation_sample


@dataclass
class GPM(Strategy):
    """Gradient Projection Memory (Saha, Garg & Roy, ICLR 2021, "Gradient Projection Memory for Continual
    Learning"): after each experience, every linear and convolution layer of the model (backbone and head)
    stores an orthonormal basis of the inputs the experience fed it; later experiences update each layer
    only orthogonally to its basis, ``G <- G - G M M^T``, so the layer's outputs on the old inputs stay put
    (:mod:`lifelong.strategies.parts.subspaces`). The basis grows by the fewest new directions (orthogonal to the
    stored ones) whose energy, added to the energy the stored basis already captures, reaches ``threshold``
    of the representation's energy (Eqs. 5, 8-9), computed on ``samples`` training samples of the
    experience. It needs no task id: with one shared head it serves a plain domain-incremental stream.

    Departures: biases are not left out or frozen (the paper's networks have none): a layer's bias is the
    weight of a constant input 1, so ``[W b]`` is projected over the inputs ``[x; 1]``, which keeps the old
    outputs exactly. Other trainable parameters (normalisation scales and shifts) are frozen after the
    first experience, as the official code does with its batch-norm parameters; their running statistics
    still follow the new data. In a stream that gives task ids, the head rows of classes no finished
    experience trained stay free (the paper's separate heads, which it never projects). One threshold for
    every layer; the paper's per-benchmark schedules are 0.97 + 0.003 per task (CIFAR-100, the default
    here), 0.95 on the first and 0.99 on the other layers of its permuted-MNIST MLP (there with 300
    samples), 0.965 on 5-datasets. The basis is computed from the Gram matrix of the representations in
    float64 rather than by an SVD of the matrix itself (the same spectrum), over every patch of the
    ``samples`` images for a convolution (the paper subsamples). The projection constrains the gradient,
    not the update: momentum, Adam's moments and weight decay still move weights inside the bases, so the
    runner warns about momentum; the paper uses plain SGD.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(projects_gradients=True)

    threshold: Annotated[float, Interval(gt=0, le=1)] = 0.97
    """Fraction of a representation's energy the basis must capture after the first experience (epsilon)."""
    threshold_increment: Annotated[float, Ge(0)] = 0.003
    """Added to ``threshold`` for each later experience (capped at 1)."""
    samples: Annotated[int, Ge(1)] = 125
    """Training samples of an experience whose layer inputs make its representation (125 in the paper)."""
    subspaces: LayerSubspaces = field(init=False, repr=False)
    """Each layer's input basis (d, K), orthonormal columns, by module name (made at :meth:`setup`)."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.subspaces = LayerSubspaces(self.threshold, self.threshold_increment, task_ids=self.task_mask is not None)

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
