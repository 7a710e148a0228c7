"""The stiffness bound the weight-anchoring penalties keep below: SGD's stable step on a quadratic, checked
by hand and against torch's optimizer on either side of the bound."""

import pytest
import torch

from lifelong.optim.probe import stable_step
from lifelong.optim.registry import stable_curvature


def test_stable_step_by_hand() -> None:
    assert stable_step() == 2.0
    assert stable_step(0.9) == pytest.approx(3.8)  # 2 (1 + 0.9)
    assert stable_step(0.9, nesterov=True) == pytest.approx(3.8 / 2.8)  # 2 (1 + mu) / (1 + 2 mu)


def _final_distance(h: float, lr: float, momentum: float, nesterov: bool, steps: int = 300) -> float:
    x = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([x], lr=lr, momentum=momentum, nesterov=nesterov)
    for _ in range(steps):
        optimizer.zero_grad()
        (h / 2 * x**2).sum().backward()
        optimizer.step()
    return abs(x.item())


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.9, True), (0.5, True)])
def test_torch_sgd_diverges_just_past_the_bound_and_not_before(momentum: float, nesterov: bool) -> None:
    lr = 0.05
    bound = stable_step(momentum, nesterov) / lr
    assert _final_distance(0.95 * bound, lr, momentum, nesterov) < 1.0
    assert not _final_distance(1.05 * bound, lr, momentum, nesterov) < 1e3  # grown past 1e3, or to inf/nan


def test_stable_curvature_of_the_optimizers() -> None:
    assert stable_curvature("sgd", 0.05, 0.9) == pytest.approx(76.0)  # 3.8 / 0.05
    assert stable_curvature("sgd", 0.05, 0.9, weight_decay=1.0) == pytest.approx(75.0)  # decay adds its own
    assert stable_curvature("sgd", 0.1, 0.9, options={"nesterov": True}) == pytest.approx(3.8 / 2.8 / 0.1)
    assert stable_curvature("sgd", 0.1, 0.0, options={"nesterov": True}) == pytest.approx(20.0)  # no momentum
    assert stable_curvature("sgdp", 0.1, 0.0) == pytest.approx(20.0)
    for adaptive in ("adam", "adamw", "lamb", "lars", "adagradnorm", "adamp", "sgd_hd"):
        assert stable_curvature(adaptive, 0.05, 0.9) is None
