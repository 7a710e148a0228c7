"""The runner: training loop, evaluation, observers and the results store.

Its names are imported on first use (:mod:`lifelong.lazy`), so that reading the results store
(:mod:`lifelong.runner.results`) does not import the training loop and torch."""

from typing import TYPE_CHECKING

from lifelong.lazy import lazy_attributes

if TYPE_CHECKING:
    from lifelong.runner.loop import RunOptions, RunResult, prepare, train
    from lifelong.runner.observers import Observer, TrainState
    from lifelong.runner.results import ResultsStore, RunRecord

_EXPORTS = {
    **dict.fromkeys(("RunOptions", "RunResult", "prepare", "train"), "lifelong.runner.loop"),
    **dict.fromkeys(("Observer", "TrainState"), "lifelong.runner.observers"),
    **dict.fromkeys(("ResultsStore", "RunRecord"), "lifelong.runner.results"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
