"""The normalization layers for small and non-i.i.d. batches (issue 16): Weight Standardization with
Batch-Channel Normalization, AdaB2N, and every model with every ``model.norm``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lifelong as ll
from lifelong.errors import ConfigError
from lifelong.models import cnn, mlp, resnet18, resnet32
from lifelong.models.norms import (NORMS, AdaB2N, BatchChannelNorm, WSConv2d, WSLinear, begin_experience,
                                   forward_with_tasks, standardized)

BUILDERS = {"mlp": lambda norm: mlp((1, 16, 16), 3, hidden=(16,), norm=norm),
            "cnn": lambda norm: cnn((1, 16, 16), 3, channels=(8, 16), norm=norm),
            "resnet18": lambda norm: resnet18((1, 16, 16), 3, nf=4, norm=norm, norm_groups=2),
            "resnet32": lambda norm: resnet32((1, 16, 16), 3, norm=norm)}
REFUSE_ONE_VECTOR = {"batch", "ghost", "adab2n"}  # statistics over the batch of a (1, C) input: no variance


def test_ws_bcn_at_batch_size_one_matches_a_hand_computation() -> None:
    norm = BatchChannelNorm(2, groups=1, momentum=0.5)
    x = np.array([[1.0, 3.0], [-2.0, 6.0]])  # one sample, channels 0 and 1, two positions each
    out = norm(torch.tensor(x, dtype=torch.float32).reshape(1, 2, 1, 2))
    # the estimates (0, 1 at the start) move halfway to the batch mean and to the second moment around the old mean
    mean = 0.5 * x.mean(axis=1)  # (1, 2)
    var = 0.5 * 1.0 + 0.5 * (x ** 2).mean(axis=1)  # (5.5, 20.5)
    batch_normalized = (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5)
    # one group: the sample is normalized over both channels and positions (affines at 1 and 0)
    expected = (batch_normalized - batch_normalized.mean()) / np.sqrt(batch_normalized.var() + 1e-5)
    assert torch.isfinite(out).all()
    assert np.allclose(out.detach().numpy().reshape(2, 2), expected, atol=1e-5)
    assert np.allclose(norm.running_mean.numpy(), mean) and np.allclose(norm.running_var.numpy(), var)
    norm.eval()  # test mode normalizes by the estimates without moving them
    assert torch.allclose(norm(torch.tensor(x, dtype=torch.float32).reshape(1, 2, 1, 2)), out)
    assert np.allclose(norm.running_mean.numpy(), mean)


def test_ws_bcn_normalizes_features_of_a_single_sample() -> None:
    norm = BatchChannelNorm(4, groups=2)
    out = norm(torch.tensor([[1.0, 2.0, 30.0, -80.0]]))  # (1, 4): two groups of two features
    # each group of the sample is centred, and scaled to unit variance but for the epsilon
    assert torch.isfinite(out).all() and torch.allclose(out.view(2, 2).mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(out.view(2, 2).var(dim=1, correction=0), torch.ones(2), atol=1e-2)


def test_weight_standardization_gives_zero_mean_and_unit_variance_per_output_channel() -> None:
    torch.manual_seed(0)
    conv, linear = WSConv2d(3, 4, 3, bias=False), WSLinear(5, 6)
    with torch.no_grad():
        conv.weight.mul_(7.0).add_(2.0)
        linear.weight.mul_(3.0).sub_(1.0)
    for layer in (conv, linear):
        weight = standardized(layer.weight, layer.eps).flatten(1)
        assert torch.allclose(weight.mean(dim=1), torch.zeros(len(weight)), atol=1e-6)
        assert torch.allclose(weight.var(dim=1, correction=0), torch.ones(len(weight)), atol=1e-4)
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(conv(x), F.conv2d(x, standardized(conv.weight, conv.eps)), atol=1e-5)
    conv(x).sum().backward()  # the gradient flows through the standardization
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def mixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two samples of task 0 (0, 2) and six of task 1 (10, 12, ..., 20), one feature."""
    x = torch.tensor([0.0, 2.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0]).unsqueeze(1)
    return x, torch.tensor([0, 0, 1, 1, 1, 1, 1, 1])


def test_adab2n_weights_the_task_statistics_of_a_mixed_batch() -> None:
    model = nn.Sequential(AdaB2N(1, momentum=0.5, kappa=1.0))
    norm = model[0]
    begin_experience(model, 0)
    first = torch.tensor([[0.0], [2.0]])
    forward_with_tasks(model, first, torch.tensor([0, 0]))  # experience 0: the plain batch statistics (1, 1)
    assert torch.allclose(norm.running_mean, torch.tensor([0.5]))
    assert torch.allclose(norm.running_var, torch.tensor([1.0]))
    begin_experience(model, 1)
    x, tasks = mixed_batch()
    out = forward_with_tasks(model, x, tasks)
    # Dirichlet posterior mean with prior exp(0) = 1 per task: (1 + 2, 1 + 6) / 10
    values = x.squeeze(1).numpy()
    weights = {0: 0.3, 1: 0.7}
    mean = sum(w * values[tasks.numpy() == t].mean() for t, w in weights.items())  # 0.3 * 1 + 0.7 * 15
    var = sum(w * ((values[tasks.numpy() == t] - mean) ** 2).mean() for t, w in weights.items())
    assert mean == pytest.approx(10.8)
    assert np.allclose(out.detach().squeeze(1).numpy(), (values - mean) / np.sqrt(var + 1e-5), atol=1e-5)
    assert norm.running_mean.item() == pytest.approx(0.5 * 0.5 + 0.5 * mean, rel=1e-6)  # kappa 1: momentum 0.5
    assert norm.running_var.item() == pytest.approx(0.5 * 1.0 + 0.5 * var, rel=1e-6)
    out.sum().backward()
    assert norm.log_prior.grad is not None and norm.log_prior.grad[:2].abs().sum() > 0  # the prior is learned
    assert norm.log_prior.grad[2:].abs().sum() == 0
    # outside forward_with_tasks, or with a task absent from the batch, the weights cover what is there
    plain = model(x)
    assert torch.allclose(plain, (x - x.mean()) / torch.sqrt(x.var(correction=0) + 1e-5), atol=1e-5)
    begin_experience(model, 2)
    only_new = forward_with_tasks(model, x[2:], torch.full((6,), 2))
    assert torch.allclose(only_new, model(x[2:]), atol=1e-6)


@pytest.mark.parametrize(("kappa", "expected"), [
    (1.0, [0.2, 0.2, 0.2, 0.2]),  # BatchNorm's fixed momentum
    (0.0, [1.0, 1 / 2, 1 / 3, 1 / 4]),  # the cumulative average of every batch
    (0.5, [0.2 ** 0.5, 0.4472 / (0.4472 + 0.8 ** 0.5), None, None]),  # in between
])
def test_adab2n_modified_momentum(kappa: float, expected: list[float | None]) -> None:
    norm = AdaB2N(1, momentum=0.2, kappa=kappa)
    etas = [norm.next_momentum() for _ in range(200)]
    for eta, value in zip(etas, expected, strict=False):
        if value is not None:
            assert eta == pytest.approx(value, abs=1e-4)
    if kappa == 0.5:  # the sequence settles at 1 - (1 - m)^kappa
        assert etas[-1] == pytest.approx(1 - 0.8 ** 0.5, rel=1e-3)
    cumulative = AdaB2N(1, momentum=0.2, kappa=0.0)
    for value in (1.0, 2.0, 6.0):  # batches of means 1, 2 and 6: their average
        cumulative(torch.tensor([[value - 1.0], [value + 1.0]]))
    assert cumulative.running_mean.item() == pytest.approx(3.0)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_model_builds_with_every_norm_and_trains_on_one_sample(name: str, norm: str) -> None:
    torch.manual_seed(0)
    model = BUILDERS[name](norm).train()
    begin_experience(model, 1)
    x = torch.randn(1, 1, 16, 16)
    if name == "mlp" and norm in REFUSE_ONE_VECTOR:
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            model(x)
        return
    out = forward_with_tasks(model, x, torch.tensor([1]))
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(model.eval()(torch.randn(4, 1, 16, 16))).all()


@pytest.mark.parametrize("norm", ["ws_bcn", "adab2n"])
def test_state_dict_round_trips_the_running_statistics(norm: str) -> None:
    torch.manual_seed(0)
    model = BUILDERS["cnn"](norm)
    begin_experience(model, 1)
    for _ in range(3):
        forward_with_tasks(model, torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 1, 0, 1, 1]))
    state = model.state_dict()
    assert any(key.endswith("running_mean") for key in state) and any(key.endswith("running_var") for key in state)
    restored = BUILDERS["cnn"](norm)
    restored.load_state_dict(copy.deepcopy(state))
    x = torch.randn(5, 1, 16, 16)
    assert torch.equal(restored.eval()(x), model.eval()(x))
    if norm == "adab2n":  # the modified momentum continues where it stopped
        layers = [m for m in (model, restored) for m in m.modules() if isinstance(m, AdaB2N)]
        assert layers[0].next_momentum() == layers[len(layers) // 2].next_momentum()


def test_the_runner_tells_adab2n_the_experience_and_er_the_tasks_of_its_replay() -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 1, 8, 8, generator=generator), torch.arange(4).repeat(20)
    x += y.view(-1, 1, 1, 1).float()
    stream = ll.class_incremental(ll.from_arrays("shifted", x[:64], y[:64], x[64:], y[64:]), n_experiences=2)
    model = cnn(stream.input_shape, stream.n_classes, channels=(4,), norm="adab2n", seed=0)
    ll.train(stream, model, ll.ER(buffer_size=16), ll.OptimConfig(epochs=1, batch_size=4, lr=0.05), seed=0,
             device="cpu")
    layer = next(m for m in model.modules() if isinstance(m, AdaB2N))
    assert layer.experience == 1
    assert layer.log_prior[:2].abs().sum() > 0 and layer.log_prior[2:].abs().sum() == 0  # balanced mixed batches


@pytest.mark.parametrize("builder", [mlp, cnn])
def test_a_bad_norm_is_a_one_line_config_error_naming_the_field(builder) -> None:
    with pytest.raises(ConfigError, match=r"^model\.norm must be one of \['adab2n', 'batch', .*'ws_bcn'\], got 'bn'$"):
        builder((1, 16, 16), 3, norm="bn")
    with pytest.raises(ConfigError, match=r"^model\.norm_groups must be a positive number of groups, got 0$"):
        builder((1, 16, 16), 3, norm="group", norm_groups=0)
