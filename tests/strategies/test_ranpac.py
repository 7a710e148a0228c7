"""RanPAC: random projection, Gram-matrix ridge classifier updated incrementally, ridge chosen on held-out
training data."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong import ResultsStore
from lifelong.data import TensorSet, class_incremental, recurring
from lifelong.errors import ConfigError
from lifelong.strategies import RanPAC
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.ranpac import RIDGES, held_out_errors
from tests.runner.test_checkpoint_resume import assert_same_run, killed_run, start


def identity_features_model(n_features: int = 8, n_classes: int = 6) -> nn.Sequential:
    """A model whose backbone is the identity on flat inputs, so features are the inputs themselves."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes))


def fitted(stream, strategy: RanPAC, model: nn.Module, experiences: int | None = None) -> RanPAC:
    strategy.setup(StrategyContext(stream, 0))
    for index, experience in enumerate(stream.experiences[:experiences]):
        strategy.before_experience(model, experience)
        assert not strategy.plan(stream.experiences, index).trains  # no gradient step at all
        strategy.after_experience(model, experience)
    return strategy


def test_incremental_ridge_equals_the_batch_solution(small_data) -> None:
    stream = class_incremental(small_data, 3)
    model = identity_features_model()
    strategy = fitted(stream, RanPAC(adapt_experiences=0, projection_dim=32, ridge=0.5), model)
    x, y = small_data.x_train, small_data.y_train
    projected = F.relu(x @ strategy.projection).to(torch.float64)  # (N, 32), every experience at once
    onehot = F.one_hot(y, 6).to(torch.float64)
    batch = torch.linalg.solve(projected.T @ projected + 0.5 * torch.eye(32, dtype=torch.float64),
                               projected.T @ onehot)
    assert torch.allclose(strategy.gram, projected.T @ projected, rtol=1e-10)
    assert torch.allclose(strategy.weights.to(torch.float64), batch, atol=1e-5, rtol=1e-5)
    test = TensorSet.concat([e.test for e in stream])
    accuracy = (strategy.predict(model, test.x, test.task) == test.y).float().mean().item()
    assert accuracy > 0.9 and strategy.chosen_ridges == [0.5, 0.5, 0.5]


def test_a_returning_class_adds_to_its_column(small_data) -> None:
    stream = recurring(small_data, n_experiences=4, classes_per_experience=2, alpha=0.5, seed=1)
    strategy = fitted(stream, RanPAC(adapt_experiences=0, projection_dim=16, ridge=1.0), identity_features_model())
    data = TensorSet.concat([e.train for e in stream])
    projected = F.relu(data.x @ strategy.projection).to(torch.float64)
    assert torch.allclose(strategy.targets, projected.T @ F.one_hot(data.y, 6).to(torch.float64), rtol=1e-10)


@pytest.mark.parametrize("width", [64, 256])  # more held-in samples than dimensions, then fewer (the kernel form)
def test_the_ridge_is_the_least_held_out_error_on_training_data(small_data, width) -> None:
    stream = class_incremental(small_data, 2)
    strategy = RanPAC(adapt_experiences=0, projection_dim=width)
    strategy.setup(StrategyContext(stream, 0))
    model = identity_features_model()
    state = strategy.generator.get_state()
    strategy.after_experience(model, stream[0])
    chosen = strategy.chosen_ridges[0]
    # redo the split and every candidate by direct solves: the chosen one has the least held-out error
    data = stream[0].train
    projected = F.relu(data.x @ strategy.projection).to(torch.float64)
    onehot = F.one_hot(data.y, 6).to(torch.float64)
    order = torch.randperm(len(data), generator=torch.Generator().set_state(state))
    check, fit = order[: round(0.2 * len(data))], order[round(0.2 * len(data)):]
    gram, targets = projected[fit].T @ projected[fit], projected[fit].T @ onehot[fit]
    errors = [((projected[check] @ torch.linalg.solve(gram + ridge * torch.eye(width, dtype=torch.float64), targets)
                - onehot[check]) ** 2).mean().item() for ridge in RIDGES]
    assert len(fit) > width if width == 64 else len(fit) < width
    assert chosen == RIDGES[min(range(len(RIDGES)), key=errors.__getitem__)]
    fast = held_out_errors(projected[fit], onehot[fit], projected[check], onehot[check], RIDGES)
    conditioned = [i for i, ridge in enumerate(RIDGES) if ridge >= 1e-2]  # where the direct solve is accurate
    assert torch.allclose(fast[conditioned], torch.tensor(errors, dtype=torch.float64)[conditioned], rtol=1e-6)


def test_state_dict_round_trip_continues_as_the_uninterrupted_run(small_data) -> None:
    stream = class_incremental(small_data, 3)
    model = identity_features_model()
    reference = fitted(stream, RanPAC(adapt_experiences=0, projection_dim=32), model)
    halfway = fitted(stream, RanPAC(adapt_experiences=0, projection_dim=32), model, experiences=2)
    buffer = io.BytesIO()
    torch.save(halfway.state_dict(), buffer)
    buffer.seek(0)
    resumed = RanPAC(adapt_experiences=0, projection_dim=32)
    resumed.setup(StrategyContext(stream, 0))
    resumed.load_state_dict(torch.load(buffer, weights_only=True), model)
    resumed.before_experience(model, stream[2])
    resumed.after_experience(model, stream[2])
    assert torch.equal(resumed.weights, reference.weights) and resumed.chosen_ridges == reference.chosen_ridges


def test_bad_settings_name_the_field() -> None:
    for bad in ({"projection_dim": 0}, {"ridge": -1.0}, {"validation_fraction": 1.0}):
        with pytest.raises(ConfigError, match=f"strategy.{next(iter(bad))}"):
            RanPAC(**bad)


def test_resume_inside_the_adaptation_equals_the_uninterrupted_run(small_data, tmp_path) -> None:
    stream = class_incremental(small_data, 3)
    settings = {"ranpac": {"adapt_experiences": 2, "projection_dim": 32}}
    reference, reference_model = start(stream, "ranpac", ResultsStore(tmp_path / "reference.db"), settings)
    assert [cost.steps > 0 for cost in reference.costs] == [True, True, False]  # frozen after two experiences
    store = ResultsStore(tmp_path / "runs.db")
    killed_run(stream, "ranpac", store, kill_at=reference.costs[0].steps + 5, settings=settings)
    resumed, resumed_model = start(stream, "ranpac", store, settings, resume_run=1)
    assert_same_run(resumed, resumed_model, reference, reference_model)
    assert reference.matrix[-1].min() >= 0.8  # the ridge classifier keeps every experience


def test_the_ridge_candidates_are_the_reference_range() -> None:
    # Issue 25: the reference searches 10.0 ** np.arange(-8, 9), 1e-8 ... 1e8 (the docstring said 1e13).
    assert RIDGES == tuple(10.0**power for power in range(-8, 9))
    assert (RIDGES[0], RIDGES[-1], len(RIDGES)) == (1e-8, 1e8, 17)
