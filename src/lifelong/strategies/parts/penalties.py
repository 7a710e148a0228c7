"""What the weight-anchoring methods (EWC, SI, MAS, L2) hold: an :class:`Anchor`, the weights ``theta*`` of the
end of the last experience with an importance ``Omega`` per weight, and the :class:`QuadraticPenalty`
``sum_i Omega_i (theta_i - theta*_i)^2`` they make, on flat vectors. The methods differ only in how ``Omega``
is estimated and in the factor in front of the penalty (Smith et al. 2023, "A Closer Look at Rehearsal-Free
Continual Learning", compare them on that footing).

The importance is kept below the stiffness the run's optimizer steps stably (:func:`importance_ceiling`):
a quadratic term of curvature ``h`` makes SGD with momentum ``mu`` at rate ``lr`` diverge once
``lr * h > 2 (1 + mu)``, whatever the rest of the loss does, and a weight the estimate calls very
important (a normalisation layer's scale under MAS on a ResNet) reaches that on its own: the catalogue's
MAS, SI and EWC runs went to inf or nan that way (``docs/results/fmnist.md``). Below the ceiling the method
is the paper's; at it a weight is still held as hard as the optimizer can hold it.

Data-parallel: the anchor is the weights, equal on every rank; an importance estimated from data is
estimated on each rank's part and averaged over the ranks by the method, and one built from the (averaged)
gradients and the weights' moves (SI) is equal on every rank by construction."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


STIFFNESS = 0.5
"""The share of the optimizer's stable curvature (:attr:`StrategyContext.stable_curvature
<lifelong.strategies.base.StrategyContext.stable_curvature>`) a penalty may take on one weight; the other
half is left to the curvature of the task's loss, which adds to it along the same weight."""


def importance_ceiling(stable_curvature: float | None, factor: float) -> float | None:
    """The largest importance ``Omega_i`` of a penalty whose curvature along weight ``i`` is
    ``factor * Omega_i`` (``2 lam`` for ``lam * sum Omega (theta - theta*)^2``, ``lam`` for EWC's
    ``lam / 2 * sum F (theta - theta*)^2``): ``STIFFNESS * stable_curvature / factor``. None (no ceiling)
    when the optimizer's step stays bounded (``stable_curvature`` None) or the penalty is off."""
    if stable_curvature is None or stable_curvature <= 0 or factor <= 0:
        return None
    return STIFFNESS * stable_curvature / factor


def trainable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's trainable parameters, by name."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


class Anchor:
    """The anchor weights ``theta*`` and their importance ``Omega`` (empty before the first :meth:`update`),
    with the penalty they make. ``Omega`` stays empty for a plain L2 penalty (every weight counts one)."""

    def __init__(self) -> None:
        self.quadratic: QuadraticPenalty | None = None
        self.capped = 0
        """Weights whose importance the last :meth:`update` held at its ``ceiling``."""

    @property
    def is_set(self) -> bool:
        """Whether an experience has ended and its weights are the anchor."""
        return self.quadratic is not None

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """``theta*`` by parameter name (views of the penalty's flat vector)."""
        return self.quadratic.anchor if self.quadratic else {}

    @property
    def importance(self) -> dict[str, torch.Tensor]:
        """``Omega`` by parameter name; empty when every weight counts one."""
        return self.quadratic.importance if self.quadratic else {}

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum_i Omega_i (theta_i - theta*_i)^2`` of the model's current weights (a scalar with a graph);
        only once the anchor :attr:`is_set`."""
        assert self.quadratic is not None, "no experience has ended: there is no anchor yet"
        return self.quadratic(model)

    def gradient(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``d/dtheta`` of :meth:`penalty` at the model's current weights, ``2 Omega (theta - theta*)``, by name
        (detached); only once the anchor :attr:`is_set`."""
        assert self.quadratic is not None, "no experience has ended: there is no anchor yet"
        return self.quadratic.gradient(model)

    def update(self, model: nn.Module, importance: dict[str, torch.Tensor], decay: float = 1.0,
               floor: float | None = None, ceiling: float | None = None) -> None:
        """Anchor at the model's current trainable weights and accumulate ``importance``, the estimate of
        the experience just ended: ``Omega <- decay * Omega + importance`` (``importance`` alone for a
        parameter without an old ``Omega``), clamped to ``[floor, ceiling]`` where given
        (:func:`importance_ceiling`); :attr:`capped` counts the weights held at the ceiling."""
        old = self.importance
        total = {k: decay * old[k] + v if k in old else v for k, v in importance.items()}
        if floor is not None or ceiling is not None:
            total = {k: v.clamp(floor, ceiling) for k, v in total.items()}
        self.capped = 0 if ceiling is None else sum(int((v >= ceiling).sum()) for v in total.values())
        self._set(trainable_weights(model), total)

    def _set(self, weights: dict[str, torch.Tensor], importance: dict[str, torch.Tensor]) -> None:
        self.quadratic = QuadraticPenalty(weights, importance or None) if weights else None

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The anchor and the importance by name, as :meth:`load` takes them."""
        return {"anchor": self.weights, "importance": self.importance}

    def load(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore :meth:`state` (a strategy's state dict holding its keys)."""
        self._set(dict(state["anchor"]), dict(state["importance"]))


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

    def gradient(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``2 w (theta - anchor)`` by name (detached): the penalty's gradient at the current parameters."""
        parameters = dict(model.named_parameters())
        theta = torch.cat([parameters[name].detach().reshape(-1) for name in self.names])  # (P,)
        difference = theta - self.flat_anchor
        return self._by_name(2 * (difference if self.flat_importance is None else self.flat_importance * difference))

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
