"""Hypergradient descent on the learning rate (Baydin et al. 2018): the step by hand, the rate growing while
steps agree and falling when they overshoot, and exact resume."""

import pytest
import torch
from torch import nn

from lifelong import OptimConfig, class_incremental, mlp
from lifelong.errors import ConfigError
from lifelong.optim.hypergradient import HypergradientSGD
from lifelong.optim.registry import build_optimizer
from tests.runner.test_checkpoint_resume import resumed_and_reference


def quadratic_steps(theta: float, lr: float, beta: float, steps: int) -> tuple[nn.Parameter, HypergradientSGD]:
    """``steps`` steps on f = theta^2 / 2 (gradient theta)."""
    weight = nn.Parameter(torch.tensor([theta]))
    optimizer = HypergradientSGD([weight], lr=lr, hypergradient_lr=beta)
    for _ in range(steps):
        weight.grad = weight.detach().clone()
        optimizer.step()
    return weight, optimizer


def test_the_rate_moves_by_the_gradient_against_the_last_update_by_hand() -> None:
    weight, optimizer = quadratic_steps(1.0, lr=0.1, beta=0.01, steps=2)
    # step 1: no earlier update, rate 0.1: theta = 0.9; step 2: h = g . u = 0.9 * 1, rate 0.1 + 0.009
    assert optimizer.learning_rates() == [pytest.approx(0.109)]
    assert weight.item() == pytest.approx(0.9 - 0.109 * 0.9)


def test_a_rate_too_small_grows_and_one_that_overshoots_shrinks() -> None:
    _, slow = quadratic_steps(1.0, lr=0.01, beta=0.05, steps=30)
    assert slow.learning_rates()[0] > 0.02  # successive steps agree: the rate grows
    _, fast = quadratic_steps(1.0, lr=1.9, beta=0.05, steps=30)
    assert fast.learning_rates()[0] < 1.9  # each step overshoots to the other side: the rate falls


def test_an_offset_is_kept_per_group_on_top_of_the_runners_rate() -> None:
    weight = nn.Parameter(torch.tensor([1.0]))
    optimizer = build_optimizer("sgd_hd", [weight], lr=0.1, options={"hypergradient_lr": 0.01})
    for _ in range(2):
        weight.grad = weight.detach().clone()
        optimizer.step()
    optimizer.param_groups[0]["lr"] = 0.05  # the schedule moved: the learned offset stays
    assert optimizer.learning_rates() == [pytest.approx(0.05 + 0.009)]
    with pytest.raises(ConfigError, match="hypergradient_lr"):
        build_optimizer("sgd_hd", [weight], lr=0.1, options={"hypergradient_lr": -1.0})


def test_a_run_killed_with_sigkill_resumes_bit_for_bit(small_data, tmp_path) -> None:
    optim = OptimConfig(name="sgd_hd", lr=0.05, momentum=0.9, epochs=2, batch_size=16, reset_per_experience=False,
                        optimizer_params={"hypergradient_lr": 1e-4})
    resumed_and_reference(class_incremental(small_data, 3), "naive", tmp_path, {"naive": {}}, optim=optim,
                          model_for=lambda stream: mlp(stream.input_shape, stream.n_classes, hidden=(16,)))
