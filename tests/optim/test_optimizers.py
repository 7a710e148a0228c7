import math

import pytest
import torch

from lifelong.errors import ConfigError
from lifelong.optim.adagradnorm import AdaGradNorm
from lifelong.optim.lamb import LAMB
from lifelong.optim.lars import LARS
from lifelong.optim.registry import build_optimizer


def weight_and_bias() -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """A 1x2 weight [3, 4] (norm 5) with gradient [0.6, 0.8] (norm 1), and a bias 1 with gradient 0.5."""
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    bias = torch.nn.Parameter(torch.tensor([1.0]))
    weight.grad = torch.tensor([[0.6, 0.8]])
    bias.grad = torch.tensor([0.5])
    return weight, bias


def test_lars_step_matches_the_paper_by_hand() -> None:
    weight, bias = weight_and_bias()
    LARS([weight, bias], lr=0.1, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001).step()
    local_lr = 0.001 * 5 / (1 + 0.1 * 5)  # eta ||w|| / (||g|| + beta ||w||) = 1/300
    expected = torch.tensor([[3.0, 4.0]]) - 0.1 * local_lr * torch.tensor([[0.6 + 0.3, 0.8 + 0.4]])
    assert torch.allclose(weight, expected)  # [[2.9997, 3.9996]]
    assert torch.allclose(bias, torch.tensor([1.0 - 0.1 * 0.5]))  # 1-D: plain SGD, no decay, no ratio


def test_lars_momentum_accumulates_the_scaled_update() -> None:
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    optimizer = LARS([weight], lr=0.1, momentum=0.5, trust_coefficient=0.01)
    for _ in range(2):
        weight.grad = torch.tensor([[0.6, 0.8]])
        optimizer.step()
    first = 0.1 * 0.01 * 5 / 1 * torch.tensor([0.6, 0.8])  # 0.005 * g
    norm = math.hypot(*(torch.tensor([3.0, 4.0]) - first).tolist())
    second = 0.5 * first + 0.1 * 0.01 * norm * torch.tensor([0.6, 0.8])
    assert torch.allclose(weight, torch.tensor([[3.0, 4.0]]) - first - second)


def test_lamb_step_matches_the_paper_by_hand() -> None:
    weight, bias = weight_and_bias()
    LAMB([weight, bias], lr=0.1, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-6).step()
    # after bias correction m_hat = g, v_hat = g^2, so r = g / (|g| + eps), about [1, 1]
    r = torch.tensor([0.6 / (0.6 + 1e-6), 0.8 / (0.8 + 1e-6)])
    update = r + 0.1 * torch.tensor([3.0, 4.0])  # about [1.3, 1.4]
    ratio = 5 / float(update.norm())  # ||w|| / ||r + lambda w|| = 5 / sqrt(3.65) = 2.617
    assert torch.allclose(weight, torch.tensor([[3.0, 4.0]]) - 0.1 * ratio * update)
    assert torch.allclose(bias, torch.tensor([1.0 - 0.1 * 0.5 / (0.5 + 1e-6)]))


def test_zero_weights_fall_back_to_a_trust_ratio_of_one() -> None:
    weight = torch.nn.Parameter(torch.zeros(1, 2))
    weight.grad = torch.tensor([[0.6, 0.8]])
    LAMB([weight], lr=0.1).step()
    assert torch.allclose(weight, -0.1 * torch.tensor([[0.6 / (0.6 + 1e-6), 0.8 / (0.8 + 1e-6)]]))


def test_adagradnorm_divides_by_the_running_gradient_norm() -> None:
    weight, bias = weight_and_bias()
    optimizer = AdaGradNorm([weight, bias], lr=0.1, initial_norm=0.01)
    optimizer.step()
    b = math.sqrt(0.01 ** 2 + 1.0 + 0.25)  # b^2 = b0^2 + ||g_w||^2 + ||g_b||^2
    assert torch.allclose(weight, torch.tensor([[3.0 - 0.1 * 0.6 / b, 4.0 - 0.1 * 0.8 / b]]))
    assert optimizer.state_dict()["accumulator"] == pytest.approx(b ** 2)


@pytest.mark.parametrize("name, lr, options", [("lars", 0.1, {"trust_coefficient": 0.1}), ("lamb", 0.05, {}),
                                               ("adagradnorm", 0.5, {})])
def test_converges_on_a_small_regression(name, lr, options) -> None:
    """Full-batch least squares, learning rate decayed linearly to 0 (the trust ratio keeps steps at a
    fraction of the weight norm, so LARS and LAMB need a decaying rate to settle)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 5, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0]) + 0.7  # (128,)
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    optimizer = build_optimizer(name, model.parameters(), lr=lr, momentum=0.9, options=options)
    with torch.no_grad():
        initial = float(((model(x).squeeze(1) - y) ** 2).mean())
    for step in range(300):
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - step / 300)
        loss = ((model(x).squeeze(1) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < initial / 1000


@pytest.mark.parametrize("make, message", [
    (lambda p: LARS(p, lr=0.0), "optim.lr must be > 0, got 0.0"),
    (lambda p: LARS(p, lr=0.1, momentum=1.0), "optim.momentum must be in \\[0, 1\\)"),
    (lambda p: LARS(p, lr=0.1, trust_coefficient=-1), "trust_coefficient must be > 0"),
    (lambda p: LAMB(p, lr=0.1, betas=(0.9, 1.5)), "optim.optimizer_params.betas"),
    (lambda p: AdaGradNorm(p, lr=0.1, initial_norm=0), "initial_norm must be > 0"),
    (lambda p: build_optimizer("lamb", p, lr=0.1, options={"trust": 1}), "optim.optimizer_params.trust: unknown"),
    (lambda p: build_optimizer("rmsprop", p, lr=0.1), "optim.name must be one of"),
])
def test_bad_settings_are_config_errors(make, message) -> None:
    with pytest.raises(ConfigError, match=message):
        make([torch.nn.Parameter(torch.ones(2, 2))])


def test_lamb_rejects_betas_that_are_not_two_numbers() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    for betas in (5, (0.9,), ("a", 0.9), (0.9, 1.0)):
        with pytest.raises(ConfigError, match="optim.optimizer_params.betas must be two numbers"):
            LAMB(params, lr=0.1, betas=betas)
