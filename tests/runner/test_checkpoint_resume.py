"""Exact resume: a run killed with SIGKILL in the middle of an experience and resumed from its newest
checkpoint ends with the same accuracy matrix and the same parameters, bit for bit, as a run never
stopped."""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest
import torch

from lifelong import OptimConfig, ResultsStore, class_incremental, mlp, train
from lifelong.errors import ResumeError, TrainingError
from lifelong.runner.checkpoint import CheckpointSettings, checkpoint_files, read
from lifelong.runner.observers import Observer, TrainState
from lifelong.strategies import STRATEGIES

OPTIM = OptimConfig(lr=0.05, epochs=2, batch_size=16, reset_per_experience=False)
SETTINGS = CheckpointSettings(every_steps=3, keep=2, keep_finished=True)
"""Finished runs keep their checkpoints here, so that a test can read what a whole run saved."""
KILL_AT_STEP = 23
"""Inside the third experience (8 steps of 16 samples, 4 per epoch, each), two steps after the
checkpoint of step 21 (epoch 1, 16 samples in)."""

STRATEGY_SETTINGS = {"er": {"buffer_size": 30}, "ewc": {"lam": 10.0}, "lwf": {}, "cumulative": {},
                     "derpp": {"buffer_size": 30}}


class KillAt(Observer):
    """Kills its own process with SIGKILL (nothing can be cleaned up) after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, state: TrainState) -> None:
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def small_mlp(stream):
    return mlp(stream.input_shape, stream.n_classes, hidden=(16,))


def start(stream, name, store, settings=STRATEGY_SETTINGS, model_for=small_mlp, optim=OPTIM, **kwargs):
    torch.manual_seed(0)
    model = model_for(stream)
    result = train(stream, model, STRATEGIES[name](**settings[name]), optim, seed=2, store=store,
                   checkpoint=SETTINGS, **kwargs)
    return result, model


def killed_run(stream, name, store, kill_at=KILL_AT_STEP, settings=STRATEGY_SETTINGS, **kwargs) -> None:
    """Runs the start of training in a forked child that SIGKILLs itself after step ``kill_at``."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # torch's lazy imports, once, before forking
    pid = os.fork()
    if pid == 0:
        try:
            start(stream, name, store, settings, observers=[KillAt(kill_at)], **kwargs)
        finally:
            os._exit(3)  # never return into pytest from the child
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def resumed_and_reference(stream, name, folder, settings, kill_at=KILL_AT_STEP, **kwargs):
    """A run of ``name`` killed with SIGKILL after step ``kill_at`` and resumed, and the same run never
    stopped, checked equal (:func:`assert_same_run`): ``(resumed, resumed_model, reference, reference_model)``."""
    store = ResultsStore(folder / "runs.db")
    killed_run(stream, name, store, kill_at=kill_at, settings=settings, **kwargs)
    resumed, resumed_model = start(stream, name, store, settings, resume_run=1, **kwargs)
    reference, reference_model = start(stream, name, ResultsStore(folder / "reference.db"), settings, **kwargs)
    assert_same_run(resumed, resumed_model, reference, reference_model)
    return resumed, resumed_model, reference, reference_model


def assert_same_run(resumed, resumed_model, reference, reference_model) -> None:
    """A resumed run equals the uninterrupted one: matrix, per-experience cost counts and every tensor
    of the final model, bit for bit."""
    assert np.array_equal(resumed.matrix, reference.matrix)
    assert [c.steps for c in resumed.costs] == [c.steps for c in reference.costs]
    assert [c.samples for c in resumed.costs] == [c.samples for c in reference.costs]
    for (key, a), (_, b) in zip(resumed_model.state_dict().items(), reference_model.state_dict().items(),
                                strict=True):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", [n for n in STRATEGY_SETTINGS if n in STRATEGIES])
def test_resume_after_sigkill_equals_uninterrupted_run(small_data, tmp_path, name) -> None:
    stream = class_incremental(small_data, 3)
    store = ResultsStore(tmp_path / "runs.db")
    killed_run(stream, name, store)
    newest = read(checkpoint_files(tmp_path / "runs-checkpoints" / "run-1")[-1])
    assert newest["counters"]["step"] == 21 and newest["position"]["within_experience"]
    assert 0 < newest["position"]["epoch_samples"] < len(newest["epoch_order"])
    # killed without any cleanup: its row still says "running", but its process is gone, so it reads back
    # as interrupted (issue 18); finished experiences kept
    record = store.get(1)
    assert record.status == "interrupted" and len(record.experiences) == newest["position"]["experience"]

    resumed, resumed_model = start(stream, name, store, resume_run=1)
    reference, reference_model = start(stream, name, ResultsStore(tmp_path / "reference.db"))

    assert_same_run(resumed, resumed_model, reference, reference_model)
    assert resumed.initial == reference.initial
    stored = store.get(1)
    assert stored.status == "finished" and np.array_equal(np.asarray(stored.matrix), reference.matrix)


def test_truncated_newest_checkpoint_falls_back_to_previous(small_data, tmp_path, caplog) -> None:
    stream = class_incremental(small_data, 3)
    store = ResultsStore(tmp_path / "runs.db")
    killed_run(stream, "er", store)
    folder = tmp_path / "runs-checkpoints" / "run-1"
    previous, newest = checkpoint_files(folder)
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="lifelong.runner.checkpoint"):
        resumed, resumed_model = start(stream, "er", store, resume_run=1)
    assert f"{newest.name!r} is unreadable" in caplog.text.replace(str(folder) + os.sep, "")
    assert "falling back to the previous checkpoint" in caplog.text
    assert previous.name == "checkpoint-step0000000018-done0002.pt"
    reference, reference_model = start(stream, "er", ResultsStore(tmp_path / "reference.db"))
    assert_same_run(resumed, resumed_model, reference, reference_model)


def test_finished_run_refuses_to_resume(small_data, tmp_path) -> None:
    stream = class_incremental(small_data, 2)
    store = ResultsStore(tmp_path / "runs.db")
    start(stream, "er", store)
    with pytest.raises(ResumeError, match="run 1 already finished"):
        start(stream, "er", store, resume_run=1)


class SignalAt(Observer):
    """Sends its own process ``number`` after step ``step``, as Ctrl-C or a scheduler would."""

    def __init__(self, step: int, number: int) -> None:
        self.step, self.number = step, number

    def on_step(self, state: TrainState) -> None:
        if state.step == self.step:
            os.kill(os.getpid(), self.number)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_checkpoint_mark_interrupted_and_resume_exactly(small_data, tmp_path, number) -> None:
    stream = class_incremental(small_data, 3)
    store = ResultsStore(tmp_path / "runs.db")
    before = signal.getsignal(number)
    with pytest.raises(KeyboardInterrupt, match=rf"{signal.Signals(number).name} at experience 1, step 10"):
        start(stream, "ewc", store, observers=[SignalAt(10, number)])
    assert signal.getsignal(number) is before  # the run's handlers are gone
    record = store.get(1)
    assert record.status == "interrupted" and "experience 1" in record.error
    newest = read(checkpoint_files(tmp_path / "runs-checkpoints" / "run-1")[-1])
    assert newest["counters"]["step"] == 10 and newest["position"]["epoch_samples"] == 32

    resumed, resumed_model = start(stream, "ewc", store, resume_run=1)
    reference, reference_model = start(stream, "ewc", ResultsStore(tmp_path / "reference.db"))
    assert_same_run(resumed, resumed_model, reference, reference_model)


def test_diverging_run_keeps_its_last_finite_checkpoint(small_data, tmp_path) -> None:
    stream = class_incremental(small_data, 3)
    store = ResultsStore(tmp_path / "runs.db")
    torch.manual_seed(0)
    model = mlp((8,), 6, hidden=(16,))
    with pytest.raises(TrainingError, match="the loss became"):
        train(stream, model, STRATEGIES["naive"](), OptimConfig(lr=1e6), store=store,
              checkpoint=CheckpointSettings(every_steps=1))
    assert store.get(1).status == "failed"
    for path in checkpoint_files(tmp_path / "runs-checkpoints" / "run-1"):
        assert all(bool(torch.isfinite(t).all()) for t in read(path)["model"].values())


def test_checkpoints_load_with_weights_only_and_keep_the_newest(small_data, tmp_path) -> None:
    stream = class_incremental(small_data, 2)
    start(stream, "er", ResultsStore(tmp_path / "runs.db"))
    files = checkpoint_files(tmp_path / "runs-checkpoints" / "run-1")
    # 2 experiences of 90 samples, 6 steps per epoch, a checkpoint every 3 steps: the last two are
    # the one inside experience 1 after its last step and the one at its end
    assert [p.name for p in files] == ["checkpoint-step0000000024-done0001.pt",
                                       "checkpoint-step0000000024-done0002.pt"]
    payload = torch.load(files[-1], weights_only=True)
    assert payload["position"] == {"experience": 2, "epoch": 1, "epoch_samples": 90, "within_experience": False}
    assert payload["rows"][1] == payload["rows"][-1] and len(payload["costs"]) == 2
    assert payload["strategy"]["buffer"]["size"] == 30 and payload["optimizer"]["state"]


# strategies whose training set is built from what they remember (a growing union, a memory, the
# adaptation data): their checkpoint inside an experience already holds that experience's data
GROWING_SETTINGS = {"cumulative": {}, "gdumb": {"buffer_size": 30}, "ncm": {"adapt_experiences": 2}}


@pytest.mark.parametrize("name", list(GROWING_SETTINGS))
def test_resume_in_first_epoch_of_strategy_built_training_set(small_data, tmp_path, name) -> None:
    """Killed in the first of two epochs of the second experience, the resumed run must draw the next
    epoch over the same training set as the uninterrupted run (not one holding the experience twice)."""
    stream = class_incremental(small_data, 3)
    store = ResultsStore(tmp_path / "runs.db")
    reference, reference_model = start(stream, name, ResultsStore(tmp_path / "reference.db"), GROWING_SETTINGS)
    first = reference.costs[0].steps  # the second experience starts at step first + 1
    killed_run(stream, name, store, kill_at=first + 5, settings=GROWING_SETTINGS)
    newest = read(checkpoint_files(tmp_path / "runs-checkpoints" / "run-1")[-1])
    assert newest["position"]["within_experience"] and newest["position"]["experience"] == 1
    assert newest["position"]["epoch"] == 0

    resumed, resumed_model = start(stream, name, store, GROWING_SETTINGS, resume_run=1)
    assert_same_run(resumed, resumed_model, reference, reference_model)


@pytest.mark.parametrize("keeps", ["samples", "positions"])
def test_resume_after_sigkill_with_a_lazy_dataset_workers_and_augmentation(tmp_path, keeps) -> None:
    """The same exactness when batches are read through a DataLoader's worker processes and every
    training and replayed batch is cropped and flipped: the augmentation draws resume where they were.
    A memory that keeps positions gives the run of one that keeps samples, resumed or not."""
    from lifelong import digits, from_dataset
    from lifelong.data.augment import Augment
    from tests.data.test_lazy import Counting

    images = digits()
    lazy = from_dataset(Counting(images.x_train, images.y_train), Counting(images.x_test, images.y_test),
                        train_targets=images.y_train, test_targets=images.y_test, num_workers=2)
    augment = Augment(crop_padding=1, flip=True, mean=(0.3,), std=(0.4,))
    stream = class_incremental(lazy, 5)
    store = ResultsStore(tmp_path / "runs.db")
    reference, reference_model = start(class_incremental(images, 5), "er", ResultsStore(tmp_path / "reference.db"),
                                       augment=augment)
    settings = {"er": {**STRATEGY_SETTINGS["er"], "memory_keeps": keeps}}
    killed_run(stream, "er", store, kill_at=reference.costs[0].steps + 7, settings=settings, augment=augment)
    newest = read(checkpoint_files(tmp_path / "runs-checkpoints" / "run-1")[-1])
    assert newest["position"]["within_experience"] and newest["generator"] is not None
    resumed, resumed_model = start(stream, "er", store, settings, resume_run=1, augment=augment)
    assert_same_run(resumed, resumed_model, reference, reference_model)
