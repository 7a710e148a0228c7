"""The runner: training loop, evaluation, observers and the results store."""

from lifelong.runner.loop import RunResult, train
from lifelong.runner.observers import Observer, TrainState
from lifelong.runner.results import ResultsStore, RunRecord

__all__ = ["Observer", "ResultsStore", "RunRecord", "RunResult", "TrainState", "train"]
