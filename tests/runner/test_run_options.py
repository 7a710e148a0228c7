"""Where and how a run executes: the device chosen by default and recorded, the evaluation batch chosen
by device, channels-last memory format and torch.compile, each giving the run it would give without."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lifelong import ER, OptimConfig, ResultsStore, class_incremental, cnn, digits, train
from lifelong.errors import ConfigError


@pytest.fixture(scope="module")
def stream():
    return class_incremental(digits(), 3)


def run(stream, **kwargs):
    torch.manual_seed(0)
    return train(stream, cnn(stream.input_shape, stream.n_classes, channels=(8, 16)), ER(buffer_size=50),
                 OptimConfig(epochs=1), seed=0, **kwargs)


def test_the_device_is_chosen_and_recorded(stream, tmp_path) -> None:
    store = ResultsStore(tmp_path / "runs.db")
    result = run(stream, store=store)  # device "auto" by default
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert store.get(result.run_id).environment["device"].startswith(expected)


def test_the_evaluation_batch_follows_the_device(stream) -> None:
    chosen = run(stream)
    explicit = run(stream, eval_batch_size=1024 if torch.cuda.is_available() else 128)
    assert np.array_equal(chosen.matrix, explicit.matrix)


def test_channels_last_and_compile_give_the_same_run(stream) -> None:
    plain = run(stream)
    assert np.allclose(run(stream, channels_last=True).matrix, plain.matrix, atol=0.02)
    compiled = run(stream, compile="eager")  # dynamo's tracing with eager kernels: the same arithmetic
    assert np.array_equal(compiled.matrix, plain.matrix)
    assert compiled.metrics["compile_seconds"] > 0 and "compile_seconds" not in plain.metrics
    with pytest.raises(ConfigError, match="run.compile: unknown torch.compile backend 'fast'"):
        run(stream, compile="fast")
