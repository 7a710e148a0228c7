"""Malformed configurations and data fed to the public entry points end in a documented error (a
:class:`LifelongError` with a one-line message), never in an unhandled exception."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong import OptimConfig, TensorSet, class_incremental, from_arrays, mlp, task_incremental, train
from lifelong.cli import main
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError, DataError, LifelongError
from lifelong.strategies import Naive

SECTIONS = ["dataset", "scenario", "model", "strategy", "optim", "run", "colour"]
FIELDS = ["name", "n_experiences", "hidden", "buffer_size", "lr", "batch_size", "epochs", "seed", "n_classes",
          "n_features", "n_per_class", "class_order", "transform", "lam", "schedule", "device", "momentum",
          "checkpoint_every_steps", "keep_checkpoints", "eval_batch_size", "test_fraction", "shuffle", "spread"]
VALUES = ["-1", "0", "1", "2", "1.5", "1e309", "nan", "inf", "-inf", "[]", "[0]", "[1, -2]", '"x"', "true",
          "{a = 1}", "99999999999999999999", "synthetic", "cnn", "ewc", "lwf", "task_incremental",
          "domain_incremental", "rotation", "cosine", "adam", "''", "[[1]]"]
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.lists(st.tuples(st.sampled_from(SECTIONS), st.sampled_from(FIELDS), st.sampled_from(VALUES)),
                min_size=1, max_size=4))
def test_malformed_configs_exit_2_with_one_line(tmp_path, capsys, assignments) -> None:
    # a results database in a folder that does not exist: a config that passes every check still ends
    # in a one-line error before any training, so every example is quick
    argv = ["run", "--db", str(tmp_path / "no" / "runs.db")]
    for section, field, value in assignments:
        argv += ["--set", f"{section}.{field}={value}"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


LABELS = st.one_of(
    st.lists(st.integers(-2, 4), min_size=0, max_size=12).map(np.asarray),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=12).map(np.asarray),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=12).map(np.asarray),
    st.lists(st.integers(0, 3), min_size=2, max_size=12).map(lambda v: np.asarray(v).reshape(-1, 1)),
)
INPUTS = st.one_of(
    st.integers(0, 12).flatmap(lambda n: st.lists(
        st.lists(st.floats(-3, 3, width=32) | st.sampled_from([float("nan"), float("inf")]), min_size=3,
                 max_size=3), min_size=n, max_size=n)).map(lambda v: np.asarray(v, dtype=np.float32)),
    st.lists(st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=3), min_size=1, max_size=6),
    st.lists(st.sampled_from(["x", "y"]), min_size=1, max_size=6).map(np.asarray),
)


MATCHED = st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.floats(-3, 3, width=32) | st.just(float("nan")), min_size=3, max_size=3), min_size=n,
             max_size=n).map(lambda v: np.asarray(v, dtype=np.float32)),
    st.lists(st.integers(-1, 4), min_size=n, max_size=n).map(np.asarray)))
"""Inputs and labels of one length, mostly usable: these reach the scenario builders and training."""


@FAST
@given(st.one_of(st.tuples(INPUTS, LABELS), MATCHED), st.one_of(st.tuples(INPUTS, LABELS), MATCHED),
       st.integers(1, 3), st.booleans())
def test_malformed_arrays_end_in_data_or_config_errors(train_set, test_set, n_experiences, task_aware) -> None:
    try:
        dataset = from_arrays("fuzz", *train_set, *test_set)
        scenario = task_incremental if task_aware else class_incremental
        stream = scenario(dataset, n_experiences=n_experiences)
        torch.manual_seed(0)
        result = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(4,)), Naive(),
                       OptimConfig(epochs=1, batch_size=4))
    except LifelongError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert result.matrix.shape == (len(stream), len(stream))


def _set(n: int, label: int = 0) -> TensorSet:
    return TensorSet.of(torch.zeros(n, 3), torch.full((n,), label), 0)


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: TensorSet([[0.0]], torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)),
     DataError, "x must be a torch.Tensor, got list"),
    (lambda: TensorSet(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, dtype=torch.long)),
     DataError, "labels y must be an integer tensor, got dtype torch.float32"),
    (lambda: TensorSet(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, dtype=torch.long),
                       torch.zeros(2, dtype=torch.long)), DataError, "inputs x must be a floating-point tensor"),
    (lambda: Experience(_set(0), _set(2), (0,), 0, "empty"), DataError,
     "experience 0 (empty) has an empty training set"),
    (lambda: Stream((Experience(_set(2), _set(2, label=5), (0,), 0),), 6, (3,)), None, None),
    (lambda: Stream((Experience(_set(2), _set(2, label=5), (0,), 0),), 6, (3,), task_aware=True), DataError,
     "experience 0: test labels [5] are never trained in its task (classes [0])"),
    (lambda: Stream((Experience(_set(2), _set(2, label=7), (0,), 0),), 6, (3,)), DataError,
     "experience 0: test labels must lie in [0, 5], found [7, 7]"),
])
def test_malformed_streams_name_the_experience_and_the_fix(build, error, message) -> None:
    if error is None:
        assert len(build()) == 1  # a class-incremental test set may hold classes trained nowhere
        return
    with pytest.raises(error) as raised:
        build()
    assert message in str(raised.value)


def test_nan_inputs_and_model_of_wrong_width_and_bad_arguments(small_data) -> None:
    x = small_data.x_train.clone()
    x[3, 2] = float("nan")
    with pytest.raises(DataError, match="experience 0: train inputs contain NaN"):
        Stream((Experience(TensorSet.of(x, small_data.y_train, 0), TensorSet.of(x[:1], small_data.y_train[:1], 0),
                           (0,), 0),), 6, (8,))
    stream = class_incremental(small_data, 2)
    with pytest.raises(DataError, match="outputs .4,. per sample but the stream has 6 classes"):
        train(stream, torch.nn.Linear(8, 4), Naive())
    with pytest.raises(DataError, match="must be a torch.nn.Module, got str"):
        train(stream, "mlp", Naive())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="run.seed must be an integer"):
        train(stream, mlp((8,), 6), Naive(), seed=-1)
    with pytest.raises(ConfigError, match="run.eval_batch_size must be an integer >= 1, got 0"):
        train(stream, mlp((8,), 6), Naive(), eval_batch_size=0)
