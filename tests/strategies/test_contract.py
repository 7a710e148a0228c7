"""The strategy contract, checked on every registered strategy (one tiny run each, :mod:`tests.strategies.catalog`).

- golden: the loss of every step and the final matrix equal the values pinned in ``golden.json`` (rtol
  1e-5): a change that moves a number has to say which and why (and rewrite the file with
  ``python -m tests.strategies.catalog --write``);
- the same seed gives the same matrix and losses twice in one process;
- each experience trains exactly the steps and samples its plan declared (without the runner options
  that re-plan as they go: FLOP budgets, adaptive batch sizes, decayed branches);
- the strategy's state round-trips through ``torch.save`` and a weights-only load into a strategy set
  up from another seed: the same state and the same predictions;
- a run interrupted inside its last experience resumes from its checkpoint to the same matrix and losses;
- what the strategy's capabilities exclude (a token stream, a stream without task ids, data-parallel
  training, a sharded model) is refused before training in one line naming it.
"""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch

from lifelong import OptimConfig, ResultsStore, class_incremental, train
from lifelong.errors import LifelongError
from lifelong.runner.checkpoint import CheckpointSettings
from lifelong.runner.evaluation import evaluate
from lifelong.runner.observers import Observer, TrainState
from lifelong.runner.validation import check_capabilities, check_freeze
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import AVERAGING_METHODS, StrategyContext
from lifelong.world import World
from tests.strategies.catalog import (
    GOLDEN,
    Losses,
    Ran,
    cases,
    gaussian,
    golden,
    run,
    text,
    tiny_gpt,
)
from tests.strategies.test_strategy_state import same

CASES = cases()
PINNED = json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def ran() -> dict[str, Ran]:
    return {}


def ran_case(ran: dict[str, Ran], name: str) -> Ran:
    if name not in ran:
        ran[name] = run(CASES[name])
    return ran[name]


def test_every_registered_strategy_has_a_case_and_golden_values() -> None:
    assert set(STRATEGIES) <= set(CASES)
    assert set(CASES) == set(PINNED), "a case without golden values: python -m tests.strategies.catalog --write"


@pytest.mark.parametrize("name", sorted(CASES))
def test_losses_and_matrix_equal_the_golden_values(name: str, ran: dict[str, Ran]) -> None:
    values, pinned = golden(ran_case(ran, name)), PINNED[name]
    assert len(values["losses"]) == len(pinned["losses"])
    np.testing.assert_allclose(values["losses"], pinned["losses"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(values["matrix"], pinned["matrix"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_seed_gives_the_same_run_twice(name: str, ran: dict[str, Ran]) -> None:
    first, second = ran_case(ran, name), run(CASES[name])
    assert first.losses == second.losses
    assert np.array_equal(first.result.matrix, second.result.matrix)


@pytest.mark.parametrize("name", sorted(name for name in CASES if not name.startswith("runner/")))
def test_each_experience_trains_what_its_plan_declared(name: str, ran: dict[str, Ran]) -> None:
    result = ran_case(ran, name).result
    plans = result.extra["plan"]
    assert len(plans) == len(result.costs)
    for plan, cost in zip(plans, result.costs, strict=True):
        assert (cost.steps, cost.samples) == (plan["steps"], plan["samples"])
        assert (plan["steps"] > 0) == (plan["train_size"] > 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_round_trips_through_a_weights_only_checkpoint(name: str, ran: dict[str, Ran]) -> None:
    done = ran_case(ran, name)
    strategy, model, stream = done.strategy, done.model, done.stream
    file = io.BytesIO()
    torch.save(strategy.state_dict(), file)
    file.seek(0)
    restored = CASES[name].build()
    restored.setup(StrategyContext(stream, 1))  # another seed: everything learned must come from the state
    restored.load_state_dict(torch.load(file, weights_only=True), copy.deepcopy(model))
    assert same(restored.state_dict(), strategy.state_dict())
    last = stream[len(stream) - 1]
    assert evaluate(model, restored, [last.test], 64, World()) == evaluate(model, strategy, [last.test], 64, World())
    if stream.objective == "classification":
        model.eval()
        assert torch.equal(restored.predict(model, last.test.x, last.test.task),
                           strategy.predict(model, last.test.x, last.test.task))


class StopAt(Observer):
    """Interrupts the run (as Ctrl-C does) after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, state: TrainState) -> None:
        if state.step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_run_interrupted_inside_its_last_experience_resumes_to_the_same_result(name: str, ran: dict[str, Ran],
                                                                              tmp_path) -> None:
    reference, case = ran_case(ran, name), CASES[name]
    store = ResultsStore(tmp_path / "runs.db")
    settings = CheckpointSettings(every_steps=2)
    stop = len(reference.losses) - 1 - (len(reference.losses) - 1) % 2 - 1  # one step after a checkpoint
    stream = case.stream()
    with pytest.raises(KeyboardInterrupt):
        train(stream, case.model(stream), case.build(), case.optim, seed=0, device="cpu", store=store,
              checkpoint=settings, observers=[StopAt(stop)], **case.options())
    stream = case.stream()
    losses = Losses()
    resumed = train(stream, case.model(stream), case.build(), case.optim, seed=0, device="cpu", store=store,
                    checkpoint=settings, resume_run=1, observers=[losses], **case.options())
    assert 0 < len(losses.values) < len(reference.losses)  # it continued from a checkpoint
    assert np.array_equal(resumed.matrix, reference.result.matrix)
    assert losses.values == reference.losses[len(reference.losses) - len(losses.values):]


def refusals(name: str) -> list[tuple[str, object]]:
    """What the strategy's capabilities exclude, each with the call that must refuse it."""
    cls = STRATEGIES[name]
    capabilities = cls().capabilities
    optim = OptimConfig(epochs=1)
    stream = CASES[name].stream()
    found: list[tuple[str, object]] = []
    if "language_model" not in capabilities.objectives:
        found.append(("token stream", lambda: train(text(), tiny_gpt(text()), cls(), optim, device="cpu")))
    if capabilities.task_ids:
        plain = class_incremental(gaussian(), 3)
        found.append(("no task ids", lambda: train(plain, CASES[name].model(plain), cls(), optim, device="cpu")))
    if not capabilities.distributed:
        found.append(("data-parallel", lambda: check_capabilities(cls(), stream, optim, distributed=True)))
    if not capabilities.sharding:
        found.append(("sharded", lambda: check_capabilities(cls(), stream, optim, sharded=True)))
    for method in sorted(AVERAGING_METHODS - capabilities.averaging):
        found.append((f"average {method}", lambda method=method: check_capabilities(cls(), stream, optim,
                                                                                     average=method)))
    if not capabilities.freeze:
        found.append(("model.freeze", lambda: check_freeze(cls(), name, "backbone")))
    return found


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_what_the_capabilities_exclude_is_refused_in_one_line(name: str) -> None:
    for what, call in refusals(name):
        with pytest.raises(LifelongError) as refused:
            call()
        message = str(refused.value)
        assert "\n" not in message, (what, message)
        assert type(STRATEGIES[name]()).__name__ in message or name in message, (what, message)
