"""What the parameter-isolation methods (DST, CLR, BN-only) share: refusal of streams without task ids,
exact state round trips, per-sample task selection in mixed batches."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from lifelong import OptimConfig, class_incremental, mlp, task_incremental, train
from lifelong.errors import ConfigError
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.task_tables import TaskTensors, by_task
from tests.strategies.test_strategy_state import same

SETTINGS = {"dst": {"update_every": 3}, "clr": {}, "bn_only": {}}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_class_incremental_stream_is_refused_in_one_line(name, small_data) -> None:
    with pytest.raises(ConfigError, match="picks its parameters by each sample's task id") as error:
        train(class_incremental(small_data, 3), mlp((8,), 6, norm="batch"), STRATEGIES[name](), OptimConfig())
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_state_survives_torch_save_and_weights_only_load(name, small_data) -> None:
    stream = task_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), norm="batch", seed=0)
    strategy = STRATEGIES[name](**SETTINGS[name])
    train(stream, model, strategy, OptimConfig(epochs=1, batch_size=16), seed=0)
    file = io.BytesIO()
    torch.save(strategy.state_dict(), file)
    file.seek(0)
    restored = STRATEGIES[name](**SETTINGS[name])
    restored.setup(StrategyContext(stream, 1))
    restored.load_state_dict(torch.load(file, weights_only=True), copy.deepcopy(model))
    assert same(restored.state_dict(), strategy.state_dict())
    assert restored.memory_bytes() == strategy.memory_bytes() > 0
    model.eval()
    mixed = torch.cat([stream[t].test.x[:5] for t in range(3)]), torch.arange(3).repeat_interleave(5)
    assert torch.equal(restored.predict(model, *mixed), strategy.predict(model, *mixed))


def test_loading_copies_into_the_tensors_an_optimizer_already_steps() -> None:
    tensors = TaskTensors()
    tensors.create(0, {"w": torch.zeros(3)}, lambda _: True)
    held = tensors.of(0)["w"]
    tensors.load({"tasks": [0], "tensors": [{"w": torch.ones(3)}]}, lambda _: True)
    assert tensors.of(0)["w"] is held and torch.equal(held, torch.ones(3)) and held.requires_grad


def test_a_mixed_batch_runs_each_task_on_its_own_samples_in_batch_order() -> None:
    x = torch.arange(6.0).unsqueeze(1)
    task = torch.tensor([2, 0, 2, 1, 0, 1])
    calls = []

    def forward(part: torch.Tensor, t: int) -> torch.Tensor:
        calls.append(len(part))
        return part * 10 + t

    out = by_task(x, task, forward)
    assert out.squeeze(1).tolist() == [2.0, 10.0, 22.0, 31.0, 40.0, 51.0]
    assert calls == [2, 2, 2]
    assert by_task(x, torch.zeros(6, dtype=torch.long), forward).equal(x * 10) and calls[-1] == 6


@pytest.mark.parametrize("name", ["dst", "clr"])
def test_resume_after_sigkill_inside_an_experience_equals_the_uninterrupted_run(name, small_data, tmp_path) -> None:
    """The checkpoint restored inside experience 2 is loaded into the tensors its rebuilt optimizer steps."""
    from tests.runner.test_checkpoint_resume import resumed_and_reference

    resumed_and_reference(task_incremental(small_data, 3), name, tmp_path, {name: SETTINGS[name]})
