"""Gradient Projection Memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.subspaces import (
    gradient_matrix,
    grow_basis,
    input_grams,
    project_out,
    projected_layers,
    write_gradient,
)


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

    threshold: float = 0.97
    """Fraction of a representation's energy the basis must capture after the first experience (epsilon)."""
    threshold_increment: float = 0.003
    """Added to ``threshold`` for each later experience (capped at 1)."""
    samples: int = 125
    """Training samples of an experience whose layer inputs make its representation (125 in the paper)."""
    bases: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """Each layer's input basis (d, K), orthonormal columns, by module name."""
    consolidated: int = field(default=0, init=False, repr=False)
    """Experiences whose representations are in the bases."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"strategy.threshold must lie in (0, 1], got {self.threshold}")
        if self.threshold_increment < 0:
            raise ConfigError(f"strategy.threshold_increment must be >= 0, got {self.threshold_increment}")
        if self.samples < 1:
            raise ConfigError(f"strategy.samples must be >= 1, got {self.samples}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.bases, self.consolidated = {}, 0

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def protected_basis(self, name: str) -> torch.Tensor:
        """The basis (d, K) the gradient of layer ``name`` must stay orthogonal to: all of it."""
        return self.bases[name]

    def after_backward(self, model: nn.Module) -> None:
        """Project each layer's gradient off its protected basis; freeze every other parameter."""
        if not self.bases:
            return
        handled: set[int] = set()
        for name, layer in projected_layers(model).items():
            if name not in self.bases:
                continue
            handled.update(id(p) for p in (layer.weight, layer.bias) if p is not None)
            if layer.weight.grad is None:
                continue
            gradient = gradient_matrix(layer, layer.weight.grad, None if layer.bias is None else layer.bias.grad)
            basis = self.protected_basis(name).to(gradient)
            rows = self.protected_rows(name, gradient.device)
            if rows is None:
                gradient = project_out(gradient, basis)
            else:
                gradient[rows] = project_out(gradient[rows], basis)
            write_gradient(layer, gradient)
        for p in model.parameters():
            if p.grad is not None and id(p) not in handled:
                p.grad.zero_()

    def protected_rows(self, name: str, device: torch.device) -> torch.Tensor | None:
        """The output rows of layer ``name`` to project (None: all): in a stream with task ids, the head's
        rows of the classes finished experiences trained, since the other rows never reach their logits."""
        if self.task_mask is None or name != "head":
            return None
        return self.class_index(self.seen_classes, device)

    def representation_batch(self, model: nn.Module, experience: Experience) -> Batch:
        """``samples`` training samples of ``experience``, drawn with the strategy's generator, on the
        model's device."""
        chosen = torch.randperm(len(experience.train), generator=self.generator)[:self.samples]
        batch = experience.train.subset(chosen).batch()
        device = next(model.parameters()).device
        return Batch(batch.x.to(device), batch.y.to(device), batch.task.to(device))

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.consolidate(model, experience)

    def consolidate(self, model: nn.Module, experience: Experience) -> tuple[Batch, dict[str, torch.Tensor], float]:
        """Grow every layer's basis with the experience's representations; returns the sample, the
        representations' Gram matrices by layer and the threshold used."""
        batch = self.representation_batch(model, experience)
        layers = projected_layers(model)
        grams = input_grams(model, layers, lambda: self.logits(model, batch.x, batch.task))
        threshold = min(self.threshold + self.threshold_increment * self.consolidated, 1.0)
        for name, gram in grams.items():
            self.bases[name] = grow_basis(self.bases.get(name), gram, threshold)
        self.consolidated += 1
        return batch, grams, threshold

    def extra_parameters(self) -> int:
        """Floats in the stored bases."""
        return sum(b.numel() for b in self.bases.values())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bases": dict(self.bases), "consolidated": self.consolidated}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.bases, self.consolidated = dict(state["bases"]), int(state["consolidated"])
