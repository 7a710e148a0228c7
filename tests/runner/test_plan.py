"""The runner-strategy contract: each strategy's plan decides the steps, the schedule's horizons and the
learning rate of every parameter group, in every combination with the optimizer settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.strategies import NCM, SLCA, Cumulative, FeTrIL, GDumb, Naive
from lifelong.strategies.base import Strategy
from tests.runner.recorder import StepRecorder


def run(stream, strategy, optim, seed=0, **kwargs):
    torch.manual_seed(seed)
    recorder = StepRecorder()
    result = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), strategy, optim, seed=seed,
                   observers=[recorder, *kwargs.pop("observers", [])], **kwargs)
    return result, recorder


def cosine_multiplier(t: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(t / total, 1.0)))


@pytest.mark.parametrize("strategy", [Cumulative(), GDumb(buffer_size=40, memory_passes=2)], ids=["cumulative", "gdumb"])
def test_stream_horizon_covers_every_step_the_strategy_trains(small_data, strategy) -> None:
    # Defect 1: the stream horizon was planned from each experience's own data, but cumulative trains on
    # everything seen and GDumb on its memory, so the cosine reached 0 early and later steps ran at lr 0.
    stream = class_incremental(small_data, 3)
    optim = OptimConfig(lr=0.05, epochs=2, batch_size=16, schedule="cosine", schedule_params={"horizon": "stream"})
    result, recorder = run(stream, strategy, optim)
    total = sum(c.steps for c in result.costs)
    assert recorder.steps[-1]["total_steps"] == total
    for record in recorder.steps:  # the step's lr is the cosine at its place in the whole run
        assert record["lr"] == pytest.approx(0.05 * cosine_multiplier(record["step"] - 1, total))
    assert min(r["lr"] for r in recorder.steps) > 0  # no step runs at lr 0
    assert [p["steps"] for p in result.extra["plan"]] == [c.steps for c in result.costs]


def test_gdumb_restarts_its_optimizer_state_without_reset_per_experience(small_data) -> None:
    # Defect 7: GDumb retrains from scratch; with optim.reset_per_experience=false it kept momentum.
    stream = class_incremental(small_data, 3)
    optim = OptimConfig(lr=0.05, epochs=1, batch_size=16, reset_per_experience=False)
    _, recorder = run(stream, GDumb(buffer_size=40), optim)
    assert [s["optimizer_state"] for s in recorder.starts] == [0, 0, 0]
    _, naive = run(stream, Naive(), optim)
    assert naive.starts[1]["optimizer_state"] > 0  # the setting itself still carries the state over


@pytest.mark.parametrize("reset", [True, False])
def test_slca_backbone_is_slow_after_adaptation_whether_or_not_the_optimizer_is_rebuilt(small_data, reset) -> None:
    # Defect 7: the scale was read once, when the optimizer was built: without reset the slow backbone
    # never switched on.
    stream = class_incremental(small_data, 3)
    optim = OptimConfig(lr=0.05, epochs=1, batch_size=16, reset_per_experience=reset)
    _, recorder = run(stream, SLCA(backbone_lr_scale=0.1, adapt_experiences=1, samples_per_class=16), optim)
    for record in recorder.steps:
        backbone, head = record["group_lrs"]
        assert head == pytest.approx(0.05)
        assert backbone == pytest.approx(0.05 if record["experience"] == 0 else 0.005)


@pytest.mark.parametrize("strategy", [NCM(adapt_experiences=1), FeTrIL(adapt_experiences=1)], ids=["ncm", "fetril"])
@pytest.mark.parametrize("sampler", ["rs2", "hard_batch"])
def test_frozen_backbone_with_a_subset_sampler(small_data, strategy, sampler) -> None:
    # Defect 8: the empty training set of a frozen backbone made rs2 divide by zero.
    stream = class_incremental(small_data, 3)
    optim = OptimConfig(epochs=2, batch_size=16, sampler=sampler, sampler_fraction=0.5)
    result, recorder = run(stream, strategy, optim)
    assert [c.steps for c in result.costs][1:] == [0, 0]
    assert result.costs[0].steps == 2 * math.ceil(0.5 * len(stream[0].train) / 16)
    assert result.matrix[-1].mean() > 0.5


class PlainGroups(Strategy):
    """A user strategy with its own parameter groups, which carry no ``lr_scale``."""

    def parameter_groups(self, model: nn.Module):
        return [{"params": [p for p in model.parameters() if p.ndim > 1]},
                {"params": [p for p in model.parameters() if p.ndim == 1]}]

    def observe(self, model: nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(model(batch.x), batch.y)


def test_parameter_groups_without_lr_scale_train_at_the_full_rate(small_data) -> None:
    # Defect 15: the documented-optional key raised KeyError.
    stream = class_incremental(small_data, 2)
    _, recorder = run(stream, PlainGroups(), OptimConfig(lr=0.05, epochs=1))
    assert all(r["group_lrs"] == [pytest.approx(0.05)] * 2 for r in recorder.steps)


def test_a_plan_that_does_not_match_is_a_one_line_error(small_data) -> None:
    from lifelong.errors import StrategyError
    from lifelong.strategies.base import ExperiencePlan

    class WrongPlan(Naive):
        def plan(self, experiences, index):
            return ExperiencePlan(train_size=len(experiences[index].train) + 1)

    class WrongScales(Naive):
        def plan(self, experiences, index):
            return ExperiencePlan(train_size=len(experiences[index].train), lr_scales=(1.0, 0.5))

    stream = class_incremental(small_data, 2)
    with pytest.raises(StrategyError, match="planned .* training samples for experience 0") as error:
        run(stream, WrongPlan(), OptimConfig(epochs=1))
    assert "\n" not in str(error.value)
    with pytest.raises(StrategyError, match="2 learning-rate scales for 1 parameter groups"):
        run(stream, WrongScales(), OptimConfig(epochs=1))


@pytest.mark.parametrize("budget", [{"max_flops": 6e5}, {"max_seconds": 0.05}])
def test_a_measured_budget_ends_the_schedule_where_it_ends_training(small_data, budget) -> None:
    # Defect 5: a FLOP or seconds budget stopped training mid-schedule, so the LR never annealed.
    stream = class_incremental(small_data, 2)
    optim = OptimConfig(lr=0.05, epochs=50, batch_size=16, schedule="cosine", **budget)
    result, recorder = run(stream, Naive(), optim)
    for index, end in enumerate(recorder.ends):
        assert end["experience_step"] == end["experience_steps"] == result.costs[index].steps
        assert end["experience_step"] < 50 * math.ceil(len(stream[index].train) / 16)  # the budget cut it
        last, n = recorder.of(index)[-1], end["experience_step"]
        if "max_flops" in budget:  # FLOPs are exact: the horizon at the last step is the executed length
            assert last["lr"] == pytest.approx(0.05 * cosine_multiplier(n - 1, n))
        else:  # step times are noisy: the horizon may have been a few steps longer, but the LR has annealed
            assert last["lr"] < 0.05 * cosine_multiplier(int(0.75 * n), n)
    if "max_flops" in budget:
        assert all(c.flops <= budget["max_flops"] for c in result.costs)
        assert all(c.flops + recorder.of(i)[-1]["next_step_flops"] > budget["max_flops"]
                   for i, c in enumerate(result.costs))  # one more step would not have fitted
