"""The quadratic penalty of the weight-anchoring methods (EWC, SI, MAS, L2): the importance-weighted squared
distance of the weights to an anchor, on flat vectors."""

from __future__ import annotations

from typing import Any

import torch


class QuadraticPenalty:
    """``sum_i w_i (theta_i - anchor_i)^2`` over the named parameters in ``anchor`` (``w = 1`` when
    ``importance`` is None); EWC, SI, MAS and L2 differ only in ``importance``.

    The anchor and the weights are kept as one flat vector each (P,), built once per consolidation, so
    a step pays a fixed handful of tensor operations (one concatenation of the parameters, a
    difference, a product and a dot product) whatever the number of parameter tensors, instead of four
    per tensor and a sum chained over them. :attr:`anchor` and :attr:`importance` give them back by
    name, as views of the flat vectors (no second copy)."""

    def __init__(self, anchor: dict[str, torch.Tensor], importance: dict[str, torch.Tensor] | None = None) -> None:
        self.names = list(anchor)
        self.shapes = [anchor[name].shape for name in self.names]
        self.flat_anchor = torch.cat([anchor[name].detach().reshape(-1) for name in self.names])  # (P,)
        self.flat_importance = None if importance is None else \
            torch.cat([importance[name].detach().reshape(-1) for name in self.names])  # (P,)

    def _by_name(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = flat.split([shape.numel() for shape in self.shapes])
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)}

    @property
    def anchor(self) -> dict[str, torch.Tensor]:
        return self._by_name(self.flat_anchor)

    @property
    def importance(self) -> dict[str, torch.Tensor]:
        """The weights by name; empty when every weight is one."""
        return {} if self.flat_importance is None else self._by_name(self.flat_importance)

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        """The penalty of ``model``'s current parameters (a scalar with a graph)."""
        parameters = dict(model.named_parameters())
        theta = torch.cat([parameters[name].reshape(-1) for name in self.names])  # (P,)
        return _WeightedSquaredNorm.apply(theta - self.flat_anchor, self.flat_importance)


class _WeightedSquaredNorm(torch.autograd.Function):
    """``sum_i w_i d_i^2`` of a vector ``d`` (P,) with weights ``w`` (P,) or none, whose gradient ``2 w d``
    reuses the product ``w d`` of the forward pass: one product in the backward pass where autograd's
    graph of the same expression takes three and a sum (a tenth of an EWC step on the digits MLP)."""

    @staticmethod
    def forward(ctx: Any, difference: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        weighted = difference if weight is None else weight * difference
        ctx.save_for_backward(weighted)
        return torch.dot(weighted, difference)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weighted,) = ctx.saved_tensors
        return weighted * (2 * grad), None
