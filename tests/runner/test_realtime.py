"""A real-time stream (``optim.stream_rate``): the batches a method's cost lets pass, traced by hand on a
3-experience stream, every batch predicted before it is trained on, and an exact resume after SIGKILL.

The stream: 3 experiences of 2 Gaussian classes, 60 training samples each, in one epoch of batches of 16
(16, 16, 16 and 12). The model, an MLP 8 -> 16 -> 6, costs in a naive step of a batch of 16 (forward and
backward, as ``FlopCounterMode`` counts the matrix products): forward 2 * 16 * (8 * 16 + 16 * 6) = 7168,
backward the two weight gradients (4096 + 3072) and the hidden layer's input gradient (3072): 17408 FLOPs,
and three quarters of that, 13056, for the batch of 12.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from lifelong import ER, GDumb, Naive, OptimConfig, ResultsStore, class_incremental, mlp, train, train_online
from lifelong.data.streams import Stream
from lifelong.errors import ConfigError
from lifelong.runner.evaluation import accuracy
from lifelong.runner.flops import FlopMeter
from lifelong.runner.observers import Observer, TrainState
from lifelong.runner.realtime import realtime_stream
from lifelong.strategies.base import StrategyContext
from lifelong.world import World
from tests.runner.test_checkpoint_resume import resumed_and_reference

NAIVE_STEP = 17408
"""FLOPs of a naive step of a batch of 16 (the module's docstring)."""
OPTIM = OptimConfig(lr=0.05, batch_size=16, epochs=1)


@dataclass
class Trained(Observer):
    """Where each step's batch ends in its experience's order (the samples drawn so far), by experience."""

    ends: dict[int, list[int]] = field(default_factory=dict)

    def on_step(self, state: TrainState) -> None:
        self.ends.setdefault(state.experience, []).append(state.epoch_samples)


def stream_of(small_data) -> Stream:
    return class_incremental(small_data, 3)


def run(stream: Stream, strategy, optim: OptimConfig = OPTIM, **options):
    trained = Trained()
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    result = train(stream, model, strategy, optim, seed=0, device="cpu", observers=[trained], **options)
    return result, trained.ends, model


def test_a_stream_as_fast_as_a_naive_step_trains_every_batch_as_without_it(small_data) -> None:
    stream = stream_of(small_data)
    realtime, ends, _ = run(stream, Naive(), OPTIM.model_copy(update={"stream_rate": "naive"}))
    plain, plain_ends, _ = run(stream, Naive())
    # each step costs exactly the stream's pace: no batch passes, and predicting each one first changes nothing
    assert ends == plain_ends == {e: [16, 32, 48, 60] for e in range(3)}
    assert np.array_equal(realtime.matrix, plain.matrix)
    assert [c.skipped for c in realtime.costs] == [0, 0, 0]
    assert [c.flops for c in realtime.costs] == [3 * NAIVE_STEP + 13056] * 3
    assert [c.online_samples for c in realtime.costs] == [60, 60, 60]


def test_a_step_twice_the_pace_trains_every_other_batch(small_data) -> None:
    # the stream brings a batch of 16 every 8704 FLOPs (12 samples in 6528): each naive step lasts two batches.
    # Batch j arrives at a_j; it is trained on unless the next has arrived by the time the learner is free (c).
    # experience 0: a = 0, 8704, 17408, 26112 (the next experience's first at 32640)
    #   b0 trained, c = 17408; b1: a_2 = 17408 <= c, passes; b2 trained, c = 34816; b3: 32640 <= c, passes
    # experience 1: b4 (a 32640, next 41344 > c) trained from c: c = 52224; b5 passes (50048 <= c); b6 trained,
    #   c = 69632; b7 passes (65280 <= c); experience 2 the same: trained the 1st and 3rd batch of each
    result, ends, _ = run(stream_of(small_data), Naive(), OPTIM.model_copy(update={"stream_rate": NAIVE_STEP / 2}))
    assert ends == {e: [16, 48] for e in range(3)}
    assert [(c.steps, c.samples, c.skipped) for c in result.costs] == [(2, 32, 28)] * 3


def test_replay_skips_exactly_the_batches_its_cost_implies(small_data) -> None:
    # ER's step trains the new batch and as many replayed samples: once its memory holds a batch, twice a naive
    # step (34816 FLOPs, 26112 for the batch of 12); its first step, on an empty memory, one (17408).
    # The stream brings each batch after a naive step of the one before: a_j = 0, 17408, 34816, 52224 (12 samples)
    # in experience 0, then 65280, 82688, 100096, 117504 and 130560, 147968, 165376, 182784.
    # experience 0: b0 trained, c = 17408; b1 (next 34816 > c) trained, c = 52224; b2 passes (52224 <= c);
    #   b3 (next 65280 > c) trained, c = 78336
    # experience 1: b4 (next 82688 > c) trained, c = 113152; b5 passes (100096); b6 (117504 > c) trained,
    #   c = 147968; b7 passes (130560)
    # experience 2: b8 passes (147968 <= c); b9 trained, c = 182784; b10 passes (182784); b11 trained
    result, ends, _ = run(stream_of(small_data), ER(buffer_size=30), OPTIM.model_copy(update={"stream_rate": "naive"}))
    assert ends == {0: [16, 32, 60], 1: [16, 48], 2: [32, 60]}
    assert [(c.steps, c.samples, c.skipped) for c in result.costs] == [(3, 44, 16), (2, 32, 28), (2, 28, 32)]
    assert [c.flops for c in result.costs] == [NAIVE_STEP + 2 * NAIVE_STEP + 2 * 13056, 4 * NAIVE_STEP,
                                               2 * NAIVE_STEP + 2 * 13056]
    assert [c.online_samples for c in result.costs] == [60, 60, 60]  # the batches that passed were predicted too


def test_every_batch_is_predicted_before_training_on_it(small_data) -> None:
    # a learning rate too small to move a float32 weight: every batch meets the untrained model, so the online
    # accuracy of an experience is the untrained model's accuracy on its training set, skipped batches included
    stream = stream_of(small_data)
    optim = OptimConfig(lr=1e-30, batch_size=16, epochs=1, momentum=0.0, stream_rate="naive")
    result, _, _ = run(stream, ER(buffer_size=30), optim)
    untrained, plain = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0), Naive()
    plain.setup(StrategyContext(stream))
    expected = [accuracy(untrained, plain, e.train) for e in stream]
    assert [c.online_metric for c in result.costs] == pytest.approx(expected, abs=1e-12)
    assert [c.skipped for c in result.costs] == [16, 28, 32]


def test_an_online_run_on_a_real_time_stream(small_data) -> None:
    stream = stream_of(small_data)
    result = train_online(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0), ER(buffer_size=30),
                          batch_size=10, eval_every_samples=30, stream_rate="naive")
    # every sample arrives once and is trained on or passes; all are predicted, and the anytime curve is kept
    assert [c.samples + c.skipped for c in result.costs] == [60, 60, 60] and sum(c.skipped for c in result.costs)
    assert [c.online_samples for c in result.costs] == [60, 60, 60] and "a_auc" in result.metrics


def test_a_stream_paced_by_seconds_passes_what_comes_while_busy(small_data) -> None:
    stream = stream_of(small_data)
    plain, _, _ = run(stream, Naive())
    slow, ends, _ = run(stream, Naive(), OPTIM.model_copy(update={"stream_rate": 1e6, "stream_cost": "seconds"}))
    assert np.array_equal(slow.matrix, plain.matrix) and [c.skipped for c in slow.costs] == [0, 0, 0]
    # a batch every picosecond: the set-up before the first step already outlasts the whole stream
    fast, ends, _ = run(stream, Naive(), OPTIM.model_copy(update={"stream_rate": 1e-12, "stream_cost": "seconds"}))
    assert ends == {} and [(c.steps, c.skipped, c.online_samples) for c in fast.costs] == [(0, 60, 60)] * 3
    assert np.allclose(fast.matrix, [fast.initial] * 3)


def test_resume_after_sigkill_skips_what_the_uninterrupted_run_skipped(small_data, tmp_path) -> None:
    # two epochs of ER at the naive pace: 5, 4 and 4 steps (44, 60 and 60 samples passed); killed at step 13, the
    # third experience's last, one step after the checkpoint of step 12 (taken every 3 steps)
    stream = stream_of(small_data)
    optim = OptimConfig(lr=0.05, epochs=2, batch_size=16, reset_per_experience=False, stream_rate="naive")
    resumed, _, reference, _ = resumed_and_reference(stream, "er", tmp_path, {"er": {"buffer_size": 30}},
                                                     kill_at=13, optim=optim)
    assert [(c.steps, c.skipped) for c in reference.costs] == [(c.steps, c.skipped) for c in resumed.costs]
    assert [c.online_metric for c in reference.costs] == [c.online_metric for c in resumed.costs]
    assert [(c.steps, c.skipped) for c in reference.costs] == [(5, 44), (4, 60), (4, 60)]
    stored = ResultsStore(tmp_path / "runs.db").get(1)
    assert [e["cost"]["skipped"] for e in stored.experiences] == [c.skipped for c in reference.costs]


def test_a_real_time_stream_refuses_what_it_cannot_pace(small_data) -> None:
    with pytest.raises(ConfigError, match="optim.stream_rate: strategy GDumb trains on 40 samples in experience 0, "
                                          "not on the 60 its stream brings"):
        run(stream_of(small_data), GDumb(buffer_size=20, memory_passes=2), OPTIM.model_copy(
            update={"stream_rate": "naive"}))
    model, strategy = mlp((8,), 6, hidden=(16,)), Naive()
    meter = FlopMeter(True, World())
    seconds = OPTIM.model_copy(update={"stream_rate": 0.01, "stream_cost": "seconds"})
    with pytest.raises(ConfigError, match="'seconds' in a data-parallel run"):
        realtime_stream(seconds, 16, model, strategy, meter, World(0, 2), sharded=False)
    with pytest.raises(ConfigError, match="stream_cost = 'seconds' paces a real-time stream, but optim.stream_rate"):
        realtime_stream(OPTIM.model_copy(update={"stream_cost": "seconds"}), 16, model, strategy, meter, World(),
                        sharded=False)
    with pytest.raises(ConfigError, match="a sharded model does not allow"):
        realtime_stream(OPTIM.model_copy(update={"stream_rate": "naive"}), 16, model, strategy, meter, World(0, 2),
                        sharded=True)
    assert realtime_stream(OPTIM, 16, model, strategy, meter, World(), sharded=False) is None


def test_the_stream_rate_is_a_positive_cost_or_naive() -> None:
    for bad in (0, -1.0, "fast", True):
        with pytest.raises(ValueError, match="must be a positive cost per batch"):
            OptimConfig(stream_rate=bad)
    assert OptimConfig(stream_rate=2e5).stream_rate == 2e5 and OptimConfig(stream_rate="naive").stream_rate == "naive"
