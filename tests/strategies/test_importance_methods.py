import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data import Batch, TensorSet, class_incremental
from lifelong.errors import ConfigError
from lifelong.strategies import L2, MAS, SI
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.importance import output_sensitivity


def test_mas_importance_of_a_linear_model_by_hand() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(0.5)
    # x = (1, 0): f = 1.5, d f^2 / dW = 2 f x = (3, 0), d f^2 / db = 3
    # x = (2, 0): f = 2.5, d f^2 / dW = (10, 0), d f^2 / db = 5; means: W (6.5, 0), b 4
    data = TensorSet.of(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 0]), 0)
    importance = output_sensitivity(model, data, batch_size=1)
    assert importance["weight"].tolist() == [[6.5, 0.0]]  # the input that is always 0 gets no importance
    assert importance["bias"].tolist() == [4.0]


def test_mas_penalty_uses_accumulated_importance(small_data) -> None:
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))
    strategy = MAS(lam=2.0)
    strategy.setup(StrategyContext(stream, 0))
    strategy.after_experience(model, stream[0])
    strategy.after_experience(model, stream[1])
    first, second = (output_sensitivity(model, stream[i].train) for i in range(2))
    assert torch.allclose(strategy.anchor.importance["1.weight"], first["1.weight"] + second["1.weight"])
    batch = stream[1].train.batch()
    with torch.no_grad():
        model[1].bias += 1.0  # penalty: 2 * sum(Omega_bias * 1^2)
    expected = F.cross_entropy(model(batch.x), batch.y) + 2.0 * strategy.anchor.importance["1.bias"].sum()
    assert strategy.observe(model, batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_si_path_integral_by_hand_and_zero_for_parameters_without_gradient(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0]]))
    strategy = SI(lam=1.0, damping=0.5)
    strategy.setup(StrategyContext(stream, 0))
    strategy.before_experience(model, stream[0])
    # loss = (w . x)^2 / 2 with x = (1, 0): gradient (1, 0); the second weight gets no gradient
    batch = Batch(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor([0]))
    strategy.observe(model, batch)
    (model(batch.x) ** 2 / 2).sum().backward()
    strategy.after_backward(model)
    with torch.no_grad():
        model.weight -= torch.tensor([[0.5, 0.0]]) + torch.tensor([[0.0, 0.3]])  # a step, plus a drift of w2
    strategy.after_experience(model, stream[0])
    # w1: path = -1 * (-0.5) = 0.5, Omega = 0.5 / (0.25 + 0.5); w2: path 0 -> Omega 0 despite its move
    assert strategy.anchor.importance["weight"][0, 0].item() == pytest.approx(0.5 / 0.75)
    assert strategy.anchor.importance["weight"][0, 1].item() == 0.0
    assert torch.equal(strategy.anchor.weights["weight"], model.weight.detach())


def test_si_path_integral_uses_the_task_losss_gradient_not_the_penalty(small_data) -> None:
    """As the reference's ``unreg_grads``: after an experience, the gradient the path integral reads is the
    task loss's, though the runner back-propagates the task loss plus the penalty."""
    stream = class_incremental(small_data, 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))
    strategy = SI(lam=3.0)
    strategy.setup(StrategyContext(stream, 0))
    strategy.before_experience(model, stream[0])
    strategy.observe(model, stream[0].train.batch()).backward()
    strategy.after_backward(model)
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.5 * p.grad
    strategy.after_experience(model, stream[0])
    with torch.no_grad():
        model[1].weight += 0.3  # away from the anchor: the penalty's gradient is far from zero
    strategy.before_experience(model, stream[1])
    batch = stream[1].train.batch()
    model.zero_grad()
    loss = strategy.observe(model, batch)
    task_gradient = torch.autograd.grad(strategy.loss(model, batch.x, batch.y, batch.task), model[1].weight)[0]
    loss.backward()
    total = model[1].weight.grad.clone()
    strategy.after_backward(model)
    assert torch.allclose(strategy.gradient["1.weight"], task_gradient, atol=1e-6)
    assert not torch.allclose(total, task_gradient, atol=1e-2)


def test_si_importance_is_clipped_at_zero_as_the_reference(small_data) -> None:
    """A parameter whose steps raised the loss (a negative path integral) gets importance 0, not a negative
    one that would reward moving it (the reference's ReLU over the accumulated Omega)."""
    stream = class_incremental(small_data, 2)
    model = nn.Linear(2, 1, bias=False)
    strategy = SI(lam=1.0, damping=0.5)
    strategy.setup(StrategyContext(stream, 0))
    strategy.before_experience(model, stream[0])
    batch = Batch(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor([0]))
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0]]))
    strategy.observe(model, batch)
    (model(batch.x) ** 2 / 2).sum().backward()  # gradient (1, 0)
    strategy.after_backward(model)
    with torch.no_grad():
        model.weight += torch.tensor([[0.5, 0.0]])  # a step up the loss: path -0.5
    strategy.after_experience(model, stream[0])
    assert strategy.anchor.importance["weight"][0, 0].item() == 0.0


def test_l2_penalty_by_hand(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))
    strategy = L2(lam=4.0)
    strategy.setup(StrategyContext(stream, 0))
    strategy.after_experience(model, stream[0])
    batch = stream[1].train.batch()
    with torch.no_grad():
        model[1].bias += 0.5  # 6 biases moved by 0.5: 4 / 2 * 6 * 0.25 = 3
    expected = F.cross_entropy(model(batch.x), batch.y).item() + 3.0
    assert strategy.observe(model, batch).item() == pytest.approx(expected, rel=1e-6)


def test_bad_regularisation_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="strategy.damping"):
        SI(damping=0.0)
    with pytest.raises(ConfigError, match="strategy.lam"):
        MAS(lam=-1.0)
    with pytest.raises(ConfigError, match="strategy.lam"):
        L2(lam=-1.0)
