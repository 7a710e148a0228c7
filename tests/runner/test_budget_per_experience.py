"""Budgets given one per experience (``optim.max_flops = [...]``): each experience is capped by its own,
the list is checked against the run's experiences, and a run under such a budget resumes bit for bit
after SIGKILL."""

from __future__ import annotations

import pytest
import torch

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.config import load_config
from lifelong.errors import ConfigError
from lifelong.runner.budget import Budget
from lifelong.strategies import ER, Joint, Naive
from tests.runner.recorder import StepRecorder
from tests.runner.test_checkpoint_resume import resumed_and_reference


def small_mlp(stream):
    torch.manual_seed(0)
    return mlp(stream.input_shape, stream.n_classes, hidden=(16,))


def test_each_experience_is_capped_by_its_own_budget(small_data) -> None:
    stream = class_incremental(small_data, 3)  # 60 training samples each, 4 steps of 16 per epoch
    steps = train(stream, small_mlp(stream), Naive(), OptimConfig(epochs=20, max_steps=[2, 5, 9]), seed=0)
    assert [c.steps for c in steps.costs] == [2, 5, 9]
    samples = train(stream, small_mlp(stream), Naive(), OptimConfig(epochs=20, max_samples=[16, 40, 100]), seed=0)
    # whole batches within each cap: an epoch is 16, 16, 16 and 12 samples, so 100 stops at 60 + 32
    assert [c.samples for c in samples.costs] == [16, 32, 92]

    recorder = StepRecorder()
    limits = [2e5, 4e5, 8e5]
    flops = train(stream, small_mlp(stream), ER(buffer_size=30), OptimConfig(epochs=20, max_flops=limits), seed=0,
                  observers=[recorder])
    for index, (cost, limit) in enumerate(zip(flops.costs, limits, strict=True)):
        last = recorder.of(index)[-1]
        assert cost.flops <= limit < cost.flops + last["next_step_flops"]  # ER's closing hook costs nothing


def test_a_scalar_budget_is_every_experience_s_and_at_reads_one_experience() -> None:
    budget = Budget(max_steps=[3, 4], max_flops=1e6)
    assert budget.at(1) == Budget(max_steps=4, max_flops=1e6)
    assert Budget(max_steps=3).at(7) == Budget(max_steps=3)
    assert budget.measured and not Budget(max_steps=[1, 2]).measured


def test_a_list_of_the_wrong_length_is_refused_in_one_line(small_data) -> None:
    stream = class_incremental(small_data, 3)
    with pytest.raises(ConfigError, match=r"^optim.max_flops gives 2 per-experience budgets for a run of 3 "
                                          r"experiences; give one per experience, or one number for all$"):
        train(stream, small_mlp(stream), Naive(), OptimConfig(max_flops=[1e5, 1e5]), seed=0)
    # a joint run trains one experience: it takes one number (or a list of one)
    joint = train(stream, small_mlp(stream), Joint(), OptimConfig(epochs=20, max_steps=[7]), seed=0)
    assert [c.steps for c in joint.costs] == [7]


@pytest.mark.parametrize("value, message", [
    ("[]", "optim.max_flops: Value error, must be a number > 0, or a list of them with one per experience"),
    ("[1e5, -1]", "optim.max_flops: Value error, must be a number > 0, or a list of them with one per experience"),
    ("0", "optim.max_flops: Value error, must be a number > 0, or a list of them with one per experience"),
])
def test_bad_flop_budgets_are_refused_naming_the_field(value, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [f"optim.max_flops={value}"])


def test_step_budgets_take_whole_numbers() -> None:
    with pytest.raises(ConfigError, match="optim.max_steps: Value error, must be an integer >= 1, or a list"):
        load_config(None, ["optim.max_steps=[3, 2.5]"])
    assert load_config(None, ["optim.max_steps=[3, 2]"]).optim.max_steps == [3, 2]
    assert load_config(None, ["optim.max_seconds=0.5"]).optim.max_seconds == 0.5


@pytest.mark.parametrize("name, kill_at", [("er", 41), ("derpp", 29)])
def test_per_experience_flop_budget_resumes_bit_exactly_after_sigkill(small_data, tmp_path, name, kill_at) -> None:
    """Killed inside the third experience, two steps after a checkpoint (every 3 steps), under a FLOP
    budget per experience that ends every experience long before its 20 epochs (ER trains 12, 21 and 27
    steps, DER++ 8, 14 and 18) and is re-planned after every step."""
    stream = class_incremental(small_data, 3)
    optim = OptimConfig(lr=0.05, epochs=20, batch_size=16, reset_per_experience=False, max_flops=[4e5, 7e5, 9e5])
    resumed, _, reference, _ = resumed_and_reference(stream, name, tmp_path, {name: {"buffer_size": 30}},
                                                     kill_at=kill_at, optim=optim)
    steps = [c.steps for c in reference.costs]
    assert sum(steps[:2]) < kill_at <= sum(steps) and max(steps) < 20 * 4
    assert [c.flops for c in resumed.costs] == [c.flops for c in reference.costs]
    assert all(c.flops <= limit for c, limit in zip(reference.costs, optim.max_flops, strict=True))
