"""CUBER (Lin et al. 2022) on a hand-made layer: with no old task that the new gradient projects onto
enough and correlates with positively it is GPM; with one, the update may move in that task's subspace
except where another old task needs it."""

import pytest
import torch
from torch import nn

from lifelong.data import domain_incremental
from lifelong.errors import ConfigError
from lifelong.models.classifier import Classifier
from lifelong.strategies import CUBER, GPM
from lifelong.strategies.base import StrategyContext

EYE = torch.eye(4)
GRADIENT = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 2.0]])
"""Head gradient [dW db] over inputs [x; 1] (d = 4): along e1 (task 0's own direction) and e4 (free)."""


def projected(strategy, model: Classifier) -> torch.Tensor:
    model.head.weight.grad = GRADIENT[:, :3].clone()
    model.head.bias.grad = GRADIENT[:, 3].clone()
    strategy.after_backward(model)
    return torch.cat([model.head.weight.grad, model.head.bias.grad.unsqueeze(1)], dim=1)


def hand_made(strategy, small_data, old_gradient: torch.Tensor) -> Classifier:
    """Head basis e1, e2, e3: task 0 spans e1, e2, task 1 spans e2, e3; ``old_gradient`` is task 0's at its
    end, in its subspace's coordinates; task 1's gradient does not matter (the new one has no part in it
    beyond e2, which task 0 shares)."""
    strategy.setup(StrategyContext(domain_incremental(small_data, 2), 0))
    strategy.subspaces.bases = {"head": EYE[:, :3].clone()}
    if isinstance(strategy, CUBER):
        strategy.task_columns = {"head": [torch.tensor([0, 1]), torch.tensor([1, 2])]}
        strategy.task_gradients = {"head": [old_gradient, torch.tensor([[0.0, -1.0], [0.0, -1.0]])]}
        strategy.relaxed = {"head": strategy.correlated_tasks("head", GRADIENT)}
        strategy.refresh()
    return Classifier(nn.Identity(), 3, 2)


def test_without_a_positively_correlated_old_task_cuber_is_gpm(small_data) -> None:
    gpm = GPM()
    reference = projected(gpm, hand_made(gpm, small_data, torch.zeros(0)))
    assert torch.equal(reference, torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0]]))
    cuber = CUBER()
    model = hand_made(cuber, small_data, torch.tensor([[-1.0, 0.0], [-1.0, 0.0]]))  # <g M_0, g_0> = -3 < 0
    assert cuber.relaxed == {"head": []}
    assert torch.equal(projected(cuber, model), reference)


def test_projection_too_small_for_the_trust_region_keeps_the_projection(small_data) -> None:
    cuber = CUBER(projection_threshold=0.8)  # ||g M_0|| / ||g|| = 1 / sqrt(2) < 0.8
    model = hand_made(cuber, small_data, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert cuber.relaxed == {"head": []}
    assert torch.equal(projected(cuber, model), torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0]]))


def test_a_positively_correlated_old_task_frees_its_own_directions(small_data) -> None:
    cuber = CUBER(projection_threshold=0.5)
    model = hand_made(cuber, small_data, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # <g M_0, g_0> = 3 > 0
    assert cuber.relaxed == {"head": [0]}
    assert torch.equal(cuber.protected["head"], EYE[:, 1:3])  # e2 stays: task 1 needs it
    assert torch.equal(projected(cuber, model), GRADIENT)  # the e1 part is kept
    # the state's tensors: the basis (12 floats), two gradients (2x2 floats), two column lists (2 longs each)
    assert cuber.memory_bytes() == 4 * (12 + 4 + 4) + 8 * (2 + 2)


def test_bad_projection_threshold_names_the_field() -> None:
    with pytest.raises(ConfigError, match="strategy.projection_threshold"):
        CUBER(projection_threshold=1.5)
