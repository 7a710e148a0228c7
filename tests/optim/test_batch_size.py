import math

import pytest
import torch

from lifelong import Naive, OptimConfig, class_incremental, mlp, train
from lifelong.errors import TrainingError
from lifelong.optim.batch_size import AdaptiveBatchSize, norm_test, per_sample_gradients


def test_norm_test_by_hand() -> None:
    gradients = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # mean [2, 0]; unbiased variance 2; Var / B = 1
    assert norm_test(gradients, theta=0.5)  # 1 <= 0.25 * 4
    assert not norm_test(gradients, theta=0.49)


def squared_error(out, y, task):
    return ((out.squeeze(1) - y) ** 2).mean()


def test_per_sample_gradients_match_autograd_one_by_one() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(4, 3), torch.randn(4)
    gradients = per_sample_gradients(model, squared_error, x, y, torch.zeros(4, dtype=torch.long))  # (4, 4)
    for i in range(4):
        model.zero_grad()
        squared_error(model(x[i:i + 1]), y[i:i + 1], None).backward()
        assert torch.allclose(gradients[i], torch.cat([model.weight.grad.flatten(), model.bias.grad]))


def test_batch_grows_under_gradient_noise_and_stays_without_it() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    test = AdaptiveBatchSize(theta=0.5, max_batch_size=64)
    task = torch.zeros(32, dtype=torch.long)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fitted = model(x).squeeze(1)
    noise = torch.randn(32, generator=torch.Generator().manual_seed(2))
    # targets at the model's own predictions plus unit noise: the mean gradient is pure noise
    assert 16 < test.propose(model, squared_error, x, fitted + noise, task, batch_size=16) <= 64
    # the same input repeated: every sample has the full gradient, no noise at all
    same = x[:1].repeat(32, 1)
    assert test.propose(model, squared_error, same, torch.full((32,), 5.0), task, batch_size=16) == 16
    assert test.propose(model, squared_error, x, fitted + noise, task, batch_size=64) == 64  # at the cap


def test_runner_grows_the_batch_rescales_the_lr_and_logs_it(small_data) -> None:
    stream = class_incremental(small_data, 2)
    optim = OptimConfig(name="sgd", lr=0.05, batch_size=8, epochs=3, lr_scaling="linear", batch_size_test="norm",
                        batch_size_test_params={"theta": 0.05, "every_steps": 2, "max_batch_size": 32})
    torch.manual_seed(0)
    result = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), Naive(), optim, seed=0)
    changes = result.metrics["batch_size_changes"]
    assert changes and all(c["lr"] == pytest.approx(0.05 * c["batch_size"] / 8) for c in changes)
    assert {c["batch_size"] for c in changes} <= {16, 32}
    # the epoch position is a sample offset: every sample of every epoch is drawn exactly once
    assert [c.samples for c in result.costs] == [3 * len(e.train) for e in stream]
    assert result.costs[0].steps < 3 * len(stream[0].train) / 8


def test_keep_updates_lengthens_training_when_the_batch_is_larger(small_data) -> None:
    stream = class_incremental(small_data, 2)
    optim = OptimConfig(lr=0.05, batch_size=32, base_batch_size=16, epochs=2, keep_updates=True)
    result = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), Naive(), optim, seed=0)
    assert [c.samples for c in result.costs] == [4 * len(e.train) for e in stream]  # 2 epochs x 32 / 16
    assert result.lr == pytest.approx(0.1)  # linear rule for SGD (auto)


def test_pure_noise_grows_the_batch_at_every_size() -> None:
    # Defect 6: the gradient norm was taken on the <= 64 per-sample gradients of the variance estimate,
    # whose mean carries Var / 64 of noise, so no batch above 64 / theta^2 = 256 could fail the test.
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4096, 4, generator=generator)
    with torch.no_grad():
        fitted = model(x).squeeze(1)
    noisy = fitted + torch.randn(4096, generator=generator)  # the mean gradient is pure noise
    test = AdaptiveBatchSize(theta=0.5, max_batch_size=100_000)
    task = torch.zeros(4096, dtype=torch.long)
    for batch_size in (64, 256, 1024, 4096):
        proposed = test.propose(model, squared_error, x[:batch_size], noisy[:batch_size], task[:batch_size],
                                batch_size)
        assert proposed > batch_size, batch_size


def test_the_batch_grows_to_the_size_the_test_asks_for() -> None:
    # Byrd et al. 2012: b = ceil(Var / (theta^2 ||g||^2)), Var from the per-sample gradients, g the
    # gradient of the whole batch; checked against autograd on a batch of 8 (variance from its first 4).
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    generator = torch.Generator().manual_seed(5)
    x, y = torch.randn(8, 2, generator=generator), torch.randn(8, generator=generator)
    task = torch.zeros(8, dtype=torch.long)
    per_sample = []
    for i in range(4):
        model.zero_grad()
        squared_error(model(x[i:i + 1]), y[i:i + 1], None).backward()
        per_sample.append(torch.cat([model.weight.grad.flatten(), model.bias.grad]))
    per_sample = torch.stack(per_sample)
    variance = float((per_sample - per_sample.mean(0)).square().sum()) / 3
    model.zero_grad()
    squared_error(model(x), y, None).backward()
    norm = float(torch.cat([model.weight.grad.flatten(), model.bias.grad]).square().sum())
    required = math.ceil(variance / (0.1 ** 2 * norm))
    assert required > 8
    test = AdaptiveBatchSize(theta=0.1, samples=4, max_batch_size=10_000)
    assert test.propose(model, squared_error, x, y, task, batch_size=8) == required
    assert AdaptiveBatchSize(theta=0.1, samples=4, max_batch_size=12).propose(
        model, squared_error, x, y, task, batch_size=8) == min(required, 12)


def test_diverged_weights_stop_the_run_in_one_line() -> None:
    """A step that made the weights infinite (a loss still finite before it) is a TrainingError, not a NaN
    batch size."""
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(math.inf)
    x, y, task = torch.ones(4, 2), torch.zeros(4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(TrainingError, match="optim.lr"):
        AdaptiveBatchSize(samples=4).propose(model, squared_error, x, y, task, batch_size=4)
