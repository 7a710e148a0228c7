"""The batch-size and learning-rate probes (:mod:`lifelong.optim.probe`), the ``lifelong probe`` command
and ``optim.batch_size = "probe"``, on problems whose answers are known in closed form."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lifelong import Naive, OptimConfig, class_incremental, mlp, train
from lifelong.cli import main
from lifelong.config import load_config
from lifelong.data.streams import TensorSet
from lifelong.errors import ConfigError
from lifelong.experiment import build_model, build_stream
from lifelong.optim.probe import ProbeSettings, gradient_noise, probe, recommended_batch_size


class Offset(nn.Module):
    """Predicts the constant ``w``; with the squared loss ``0.5 |w - x|^2`` the per-sample gradient is
    ``w - x``, so at ``w = 0`` the gradients are ``-x``: their covariance is the inputs'."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w - x


def squared_loss(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return 0.5 * out.square().sum(dim=1).mean()


def offset_data(n: int, mean: float, std: float, dim: int = 10, seed: int = 0) -> TensorSet:
    """Inputs ``-(mean + std z)``: per-sample gradients of :class:`Offset` ``mean + std z`` with
    ``|G|^2 = dim mean^2`` and ``tr(Sigma) = dim std^2``."""
    z = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return TensorSet.of(-(mean + std * z), torch.zeros(n, dtype=torch.long), 0)


def test_noise_scale_of_a_known_gradient_covariance_is_within_10_percent() -> None:
    # tr(Sigma) = 10 * 1.5^2 = 22.5, |G|^2 = 10 * 0.5^2 = 2.5: B_simple = 9, whose nearest power of two is 8
    n = 16384
    result = probe(Offset(10), offset_data(n, mean=0.5, std=1.5), squared_loss, ProbeSettings(samples=n))
    assert result.samples == n
    assert result.trace_covariance == pytest.approx(22.5, rel=0.1)
    assert result.squared_gradient_norm == pytest.approx(2.5, rel=0.1)
    assert result.noise_scale == pytest.approx(9.0, rel=0.1) and result.critical_batch_size == result.noise_scale
    assert result.batch_size == 8


def test_the_estimates_are_the_unbiased_sample_formulas() -> None:
    data = offset_data(50, mean=0.5, std=1.5)
    gradients = -data.x.double().numpy()  # (50, 10): the per-sample gradients at w = 0
    trace = gradients.var(axis=0, ddof=1).sum()  # (sum |g_i|^2 - n |mean|^2) / (n - 1)
    squared_norm = np.square(gradients.mean(axis=0)).sum() - trace / 50  # E|mean|^2 = |G|^2 + tr(Sigma)/n
    assert gradient_noise(Offset(10), data, squared_loss, batch_size=16) == pytest.approx((trace, squared_norm),
                                                                                         rel=1e-5)


@pytest.mark.parametrize(("noise_scale", "limit", "expected"), [
    (0.0, 100, 1), (1.4, 100, 1), (2.9, 100, 4), (9.0, 100, 8), (11.9, 100, 16), (300.0, 100, 100),
    (math.inf, 269, 269), (90.0, 100, 64), (95.0, 100, 100)])  # log2 95 = 6.57: 128, clipped to 100
def test_recommended_batch_size_is_the_nearest_power_of_two_within_the_data(noise_scale, limit, expected) -> None:
    assert recommended_batch_size(noise_scale, limit) == expected


class Quadratic(nn.Module):
    """``0.5 p^T A p`` for every input, ``A = Q diag(spectrum) Q^T`` with a seeded orthogonal ``Q``: the
    Hessian is ``A`` and every sample's gradient is the same."""

    def __init__(self, spectrum: list[float], seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=generator))
        self.register_buffer("a", q @ torch.diag(torch.tensor(spectrum)) @ q.T)
        self.p = nn.Parameter(torch.randn(len(spectrum), generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.p @ self.a @ self.p).expand(len(x), 1)


def test_top_hessian_eigenvalue_of_a_known_quadratic_and_the_stable_learning_rate() -> None:
    spectrum = [10.0, 6.0, 3.0, 1.0, 0.5, *[0.1] * 15]
    data = TensorSet.of(torch.zeros(64, 1), torch.zeros(64, dtype=torch.long), 0)
    result = probe(Quadratic(spectrum), data, lambda out, _: out.mean())
    assert result.max_eigenvalue == pytest.approx(10.0, rel=0.01) and result.converged
    assert result.max_stable_lr == pytest.approx(2 / 10, rel=0.01)
    assert result.max_stable_lr_with(0.9) == pytest.approx(2 * 1.9 / 10, rel=0.01)
    # every sample has the same gradient: no noise, so a batch of one is as good as any
    assert result.trace_covariance == pytest.approx(0.0, abs=1e-4) and result.batch_size == 1
    assert result.samples_read == 64 + result.iterations * 64
    capped = probe(Quadratic(spectrum), data, lambda out, _: out.mean(), ProbeSettings(max_iterations=2))
    assert capped.iterations == 2 and not capped.converged


def test_the_probe_leaves_the_model_as_it_was() -> None:
    model = Quadratic([2.0, 1.0])
    before = model.p.detach().clone()
    probe(model, TensorSet.of(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), 0), lambda out, _: out.mean())
    assert model.training and model.p.grad is None and torch.equal(model.p, before)


def shifted_inputs(n: int = 64) -> TensorSet:
    """Four features with means 5 to 8 and spreads 1 to 4, three classes: far from BatchNorm's initial
    statistics (mean 0, variance 1)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.arange(5.0, 9.0) + torch.arange(1.0, 5.0) * torch.randn(n, 4, generator=generator)
    return TensorSet.of(x, torch.randint(0, 3, (n,), generator=generator), 0)


def test_the_probe_sees_a_batchnorm_model_normalized_as_training_does() -> None:
    """Issue 25: in evaluation mode an untrained BatchNorm model was probed with its initial statistics,
    unnormalized. Now its probe equals that of the same linear layer on inputs standardized by the probed
    samples' statistics (one batch: BatchNorm's running variance is the unbiased one)."""
    data = shifted_inputs()
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    normalized = nn.Sequential(nn.BatchNorm1d(4, affine=False), linear)
    settings = ProbeSettings(samples=64, hessian_samples=64, batch_size=64, tol=1e-6)
    standardized = TensorSet.of((data.x - data.x.mean(0)) / (data.x.var(0) + 1e-5).sqrt(), data.y, 0)
    expected, got = probe(linear, standardized, settings=settings), probe(normalized, data, settings=settings)
    assert got.trace_covariance == pytest.approx(expected.trace_covariance, rel=1e-4)
    assert got.squared_gradient_norm == pytest.approx(expected.squared_gradient_norm, rel=1e-4)
    assert got.max_eigenvalue == pytest.approx(expected.max_eigenvalue, rel=1e-3)
    unnormalized = probe(nn.Sequential(linear), data, settings=settings)  # what evaluation mode amounted to
    assert got.trace_covariance < unnormalized.trace_covariance / 10


def test_the_probe_leaves_batchnorm_running_statistics_and_momentum_unchanged() -> None:
    model = mlp((4,), 3, hidden=(16,), norm="batch", seed=0)
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    model.train()
    model(shifted_inputs(32).x)  # some running statistics that are not the initial ones
    before = {name: b.clone() for name, b in model.named_buffers()}
    probe(model, shifted_inputs(), settings=ProbeSettings(samples=64, hessian_samples=16, batch_size=20,
                                                          max_iterations=3))
    assert all(torch.equal(b, before[name]) for name, b in model.named_buffers())
    assert norm.momentum == 0.1 and model.training and norm.training


@pytest.mark.parametrize(("field", "value"), [("samples", 1), ("tol", 0.0), ("max_iterations", 0)])
def test_bad_settings_name_the_field_and_the_option(field, value) -> None:
    with pytest.raises(ConfigError, match=f"probe {field} \\(`lifelong probe --{field.replace('_', '-')}`\\)"):
        ProbeSettings(**{field: value})


def test_cli_probes_the_default_config_and_prints_the_numbers(capsys) -> None:
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    config = load_config(None, [])
    stream = build_stream(config)
    expected = probe(build_model(config, stream), stream[0].train)
    cells = [line.split("│") for line in out.splitlines() if line.count("│") == 3]
    rows = {cell[1].strip(): cell[2].strip() for cell in cells}
    assert rows["recommended batch size"] == str(expected.batch_size)
    assert rows["noise scale B_simple ~ B_crit"] == f"{expected.noise_scale:.3f}"
    assert rows["max stable lr 2/lambda_max (no momentum)"] == f"{2 / expected.max_eigenvalue:.3f}"
    assert rows["configured optim.batch_size"] == "16"


@pytest.mark.parametrize(("argv", "message"), [
    (["probe", "--samples", "1"], "probe samples (`lifelong probe --samples`) must be >= 2, got 1"),
    (["probe", "--tol", "-1"], "probe tol (`lifelong probe --tol`) must be > 0, got -1.0"),
    (["probe", "--set", "optim.batch_size=fast"], "optim.batch_size: Value error, must be an integer >= 1, or "
                                                  "'probe'")])
def test_cli_bad_options_are_one_line_errors(capsys, argv, message) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""


def test_a_run_with_a_probed_batch_size_records_it_and_trains_as_at_that_size(small_data) -> None:
    stream = class_incremental(small_data, 3, seed=0)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return mlp(stream.input_shape, stream.n_classes, hidden=(16,))

    expected = probe(model(), stream[0].train).batch_size
    probed = train(stream, model(), Naive(), OptimConfig(batch_size="probe", epochs=1), seed=0)
    fixed = train(stream, model(), Naive(), OptimConfig(batch_size=expected, epochs=1), seed=0)
    assert probed.metrics["probed_batch_size"] == expected
    assert probed.costs[0].steps == math.ceil(len(stream[0].train) / expected) == fixed.costs[0].steps
    np.testing.assert_array_equal(probed.matrix, fixed.matrix)
