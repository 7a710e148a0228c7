import numpy as np
import pytest
import torch
from torch import nn

from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.errors import ConfigError, DataError, TrainingError
from lifelong.runner.observers import Observer, TrainState
from lifelong.strategies import ER, Cumulative, Joint, Naive
from lifelong.strategies.base import Capabilities


def fast() -> OptimConfig:
    return OptimConfig(lr=0.05, epochs=2, batch_size=16)


def run(stream, strategy, seed=0, **kwargs):
    torch.manual_seed(seed)
    return train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(32,)), strategy, fast(), seed=seed,
                 **kwargs)


def test_matrix_shape_costs_and_counts(small_data) -> None:
    stream = class_incremental(small_data, 3)
    result = run(stream, Naive())
    assert result.matrix.shape == (3, 3)
    for i, exp in enumerate(stream):
        steps = 2 * -(-len(exp.train) // 16)
        assert result.costs[i].steps == steps
        assert result.costs[i].samples == 2 * len(exp.train)
        assert result.costs[i].seconds > 0 and result.costs[i].buffer_size == 0
    # an experience is learned when trained on, and nothing is known of unseen classes
    assert all(result.matrix[i, i] > 0.9 for i in range(3))
    assert result.matrix[0, 1] == 0.0 and result.matrix[0, 2] == 0.0


def test_same_seed_same_matrix_bit_for_bit(small_data) -> None:
    stream = class_incremental(small_data, 3)
    a = run(stream, ER(buffer_size=20), seed=3)
    b = run(stream, ER(buffer_size=20), seed=3)
    c = run(stream, ER(buffer_size=20), seed=4)
    assert np.array_equal(a.matrix, b.matrix)
    assert a.initial == b.initial
    assert not np.array_equal(a.matrix, c.matrix) or a.initial != c.initial


def test_joint_has_one_row_over_all_test_sets(small_data) -> None:
    stream = class_incremental(small_data, 3)
    result = run(stream, Joint())
    assert result.matrix.shape == (1, 3)
    assert result.costs[0].samples == 2 * sum(len(e.train) for e in stream)
    assert result.metrics["forgetting"] is None


def test_cumulative_trains_on_everything_seen(small_data) -> None:
    stream = class_incremental(small_data, 3)
    result = run(stream, Cumulative())
    sizes = np.cumsum([len(e.train) for e in stream])
    assert [c.samples for c in result.costs] == [2 * int(s) for s in sizes]
    assert result.costs[-1].buffer_size == int(sizes[-2])


def test_observers_see_every_step_and_can_stop_an_experience(small_data) -> None:
    class StopAfterThree(Observer):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_step(self, state: TrainState) -> bool:
            self.steps.append(state.step)
            return state.experience_step == 3

    stream = class_incremental(small_data, 2)
    observer = StopAfterThree()
    result = run(stream, Naive(), observers=[observer])
    assert [c.steps for c in result.costs] == [3, 3]
    assert observer.steps == [1, 2, 3, 4, 5, 6]


def test_model_of_wrong_width_is_a_clear_error(small_data) -> None:
    stream = class_incremental(small_data, 3)
    with pytest.raises(DataError, match="6 classes"):
        train(stream, nn.Sequential(nn.Linear(8, 4)), Naive(), fast())


def test_diverging_loss_stops_with_position_and_marks_run_failed(small_data, tmp_path) -> None:
    stream = class_incremental(small_data, 3)
    store = ResultsStore(tmp_path / "runs.db")
    torch.manual_seed(0)
    with pytest.raises(TrainingError, match=r"at experience \d+, step \d+ \(epoch \d+\)"):
        train(stream, mlp((8,), 6), Naive(), OptimConfig(lr=1e6, momentum=0.9), store=store)
    record = store.runs()[0]
    assert record.status == "failed" and "loss became" in record.error


def test_bad_device_and_schedule_are_config_errors(small_data) -> None:
    stream = class_incremental(small_data, 3)
    with pytest.raises(ConfigError, match="run.device"):
        train(stream, mlp((8,), 6), Naive(), fast(), device="tpu")
    with pytest.raises(ConfigError, match="optim.schedule"):
        train(stream, mlp((8,), 6), Naive(), OptimConfig(schedule="zigzag"))


class ByTask(Naive):
    """A stand-in for a parameter-isolation method: it declares that it needs task ids."""

    CAPABILITIES = Capabilities(task_ids=True)


def test_a_method_that_needs_task_ids_is_refused_on_a_stream_without_them(small_data) -> None:
    from lifelong.data import domain_incremental, task_incremental

    for stream in (class_incremental(small_data, 3), domain_incremental(small_data, 2)):
        with pytest.raises(ConfigError, match="picks its parameters by each sample's task id.*task_aware = true"):
            run(stream, ByTask())
    aware = domain_incremental(small_data, 2, task_aware=True)
    assert aware.task_aware and aware.task_mask().all()  # every class in every task: the mask masks nothing
    for stream in (task_incremental(small_data, 3), aware):
        assert run(stream, ByTask()).matrix.shape == (len(stream), len(stream))
