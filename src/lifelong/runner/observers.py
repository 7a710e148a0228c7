"""Observers: things that watch the training loop without changing the loss (progress display,
budgets, periodic evaluation, checkpoints). The runner calls them with its :class:`TrainState`."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class TrainState:
    """The runner's counters, read by observers. An observer may set ``stop_experience`` to end the
    current experience early (a budget)."""

    experience: int = 0
    experience_steps: int = 0
    """Planned optimizer steps of the current experience."""
    epoch: int = 0
    experience_step: int = 0
    step: int = 0
    """Optimizer steps in the whole run."""
    samples: int = 0
    """New-data samples drawn in the whole run."""
    experience_samples: int = 0
    loss: float = 0.0
    lr: float = 0.0
    stop_experience: bool = False


class Observer:
    """Base observer: every hook does nothing."""

    def on_experience_start(self, state: TrainState) -> None:
        """Before the first step of an experience."""

    def on_step(self, state: TrainState) -> None:
        """After each optimizer step."""

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        """After an experience is trained and evaluated (``accuracies``: its row of the matrix)."""


class ProgressBar(Observer):
    """A rich progress bar per experience, refreshed every ``every`` steps; silent when the console
    is not a terminal."""

    def __init__(self, n_experiences: int, console: Console | None = None, every: int = 10) -> None:
        self.console = console or Console(stderr=True)
        self.every = every
        self.n_experiences = n_experiences
        self.progress = Progress(TextColumn("[bold]experience {task.fields[index]}/{task.fields[total_exp]}"),
                                 BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                                 TimeElapsedColumn(), console=self.console, transient=False,
                                 disable=not self.console.is_terminal)
        self.task = None

    def on_experience_start(self, state: TrainState) -> None:
        if self.task is None:
            self.progress.start()
        self.task = self.progress.add_task("train", total=state.experience_steps, index=state.experience + 1,
                                           total_exp=self.n_experiences, loss=0.0)

    def on_step(self, state: TrainState) -> None:
        if state.experience_step % self.every == 0 and self.task is not None:
            self.progress.update(self.task, completed=state.experience_step, loss=state.loss)

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=state.experience_step, loss=state.loss)
            if state.experience + 1 == self.n_experiences:
                self.progress.stop()
