"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

A checkpoint is written at every experience boundary (after the experience is trained, evaluated and
recorded) and every ``every_steps`` optimizer steps inside an experience, always between two steps.
Only the newest ``keep`` files are kept, and once the run has finished and its result is stored they
are deleted (a finished run is never resumed; ``keep_finished`` keeps them). A run killed at any
moment (even ``SIGKILL``) resumes from its newest readable checkpoint and ends with the same accuracy
matrix and the same parameters, bit for bit on CPU, as a run that was never stopped.

Format (version 2). One file per checkpoint, ``checkpoint-step<STEP>-done<EXPERIENCES>.pt`` (zero
padded, so names sort in training order), written by :func:`torch.save` and readable with
``torch.load(path, weights_only=True)``: only plain containers, numbers, strings and tensors, no
pickled classes. The top-level dict holds:

* ``format`` = ``"lifelong-checkpoint"``, ``version`` = 1, ``run_id`` (int or None), ``seed``;
* ``position``: ``experience`` (index of the experience to train next or in progress), ``epoch``,
  ``epoch_samples`` (samples already drawn in that epoch: a sample offset, so it stays valid when the
  batch size changes) and ``within_experience`` (False at a boundary: the experience has not started);
* ``epoch_order``: the current epoch's sample order (a long tensor) or None, so that any sampler
  resumes with exactly the remaining samples;
* ``counters``: the runner's :class:`~lifelong.runner.observers.TrainState` numbers (steps, samples,
  learning rate, training seconds so far, ...), with ``experience_seconds`` for the clock;
* ``model``, ``optimizer`` (None between experiences when the optimizer is rebuilt) and ``strategy``:
  their ``state_dict()``;
* ``random``: the global random states: ``torch`` (byte tensor), ``cuda`` (list of byte tensors),
  ``numpy`` (``keys`` tensor, ``position``, ``has_gauss``, ``cached_gaussian``) and ``python``
  (``random.getstate()`` as nested tuples);
* ``initial``, ``rows`` and ``costs``: the accuracies of the untrained model, the rows of the accuracy
  matrix so far and the cost of each finished experience (plain dicts);
* ``observers``: the ``state_dict()`` of each part of the run that keeps state beside the model and the
  strategy, in the run's order: the weight averaging, then the observers (the evaluation curve recorded
  so far, so a resumed run stores every point);
* ``generator``: the state of the runner's own generator (training augmentation), or None.

Version 2 (the runner's per-experience plans, the curve in checkpoints) reads no version 1 file: a run
checkpointed by an older lifelong is resumed by that version or started again.

A file is first written to a temporary name in the same folder, flushed and ``fsync``-ed, renamed over
its final name with :func:`os.replace` and the folder is ``fsync``-ed: a reader sees a whole file or
none. A file that cannot be read anyway (a truncated copy, a full disk) is skipped on resume with a
warning, falling back to the previous one. A checkpoint that cannot be written (a full disk, a
read-only folder) stops the run with a :class:`~lifelong.errors.StorageError` naming the folder and the
cause; the run is marked failed and resumes from its newest checkpoint once the cause is fixed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lifelong.errors import ConfigError, ResumeError, StorageError
from lifelong.metrics.compute import ExperienceCost
from lifelong.runner.observers import TrainState
from lifelong.runner.results import ResultsStore

FORMAT = "lifelong-checkpoint"
VERSION = 2
_NAME = re.compile(r"checkpoint-step(\d{10})-done(\d{4})\.pt")
_CLOCK_FIELDS = ("experience_started", "excluded_seconds", "clock_paused")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointSettings:
    """Where and how often a run saves checkpoints.

    ``directory``: the folder that holds one sub-folder ``run-<id>`` per stored run (or the checkpoints
    themselves for a run without a results store); None puts it next to the results database, as
    ``<db name>-checkpoints``. ``every_steps``: also save every that many optimizer steps inside an
    experience (0: only at experience boundaries). ``keep``: how many of the newest files to keep.
    ``keep_finished``: keep them once the run has finished (by default they are deleted then).
    """

    directory: Path | None = None
    every_steps: int = 200
    keep: int = 2
    keep_finished: bool = False

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise ConfigError(f"run.checkpoint_every_steps must be >= 0 (0: only between experiences), "
                              f"got {self.every_steps}")
        if self.keep < 1:
            raise ConfigError(f"run.keep_checkpoints must be >= 1, got {self.keep}")

    def folder(self, database: Path | None, run_id: int | None) -> Path:
        """The folder of one run's checkpoints."""
        if self.directory is not None:
            root = Path(self.directory)
        elif database is not None:
            root = database.parent / f"{database.stem}-checkpoints"
        else:
            raise ConfigError("run.checkpoint_dir: a run without a results store needs a checkpoint folder; "
                              "pass CheckpointSettings(directory=...) or a store")
        return root if run_id is None else root / f"run-{run_id}"


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run after a checkpoint was saved. The message says where, and how to
    continue (``how``); a caller that knows the command that started the run (the command line) puts
    that command in with :meth:`continued_with`."""

    def __init__(self, where: str, run_id: int | None, how: str) -> None:
        super().__init__(f"{where}; continue with {how}")
        self.where = where
        self.run_id = run_id

    def continued_with(self, how: str) -> RunInterrupted:
        """The same interruption, continued with ``how``."""
        return RunInterrupted(self.where, self.run_id, how)


def checkpoint_files(folder: Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.fullmatch(p.name))


def write_atomic(payload: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, ``fsync``, rename over ``path``, ``fsync`` the folder."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(dict(payload), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's payload; :class:`ResumeError` if the file is unreadable or not a checkpoint."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails inside zip, pickle or torch in many ways
        raise ResumeError(f"checkpoint {str(path)!r} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ResumeError(f"{str(path)!r} is not a lifelong checkpoint")
    if payload.get("version") != VERSION:
        raise ResumeError(f"checkpoint {str(path)!r} has format version {payload.get('version')}, this lifelong "
                          f"reads version {VERSION}")
    return payload


def latest(folder: Path) -> dict[str, Any]:
    """The newest readable checkpoint in ``folder``, warning about each newer one that is damaged."""
    for path in reversed(checkpoint_files(folder)):
        try:
            return read(path)
        except ResumeError as error:
            logger.warning("%s; falling back to the previous checkpoint", error)
    raise ResumeError(f"no usable checkpoint in {str(folder)!r}; start the run again")


def random_states(cuda: bool = True) -> dict[str, Any]:
    """The global random states of torch (CPU and, with ``cuda`` on a machine that has it, CUDA's),
    numpy and Python."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if cuda and torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_random_states(states: Mapping[str, Any]) -> None:
    """Restore :func:`random_states`."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


@contextlib.contextmanager
def random_states_kept(cuda: bool) -> Iterator[None]:
    """The block draws from the global random states as it likes; after it they are as before it
    (CUDA's only with ``cuda``: a CPU run leaves CUDA uninitialised)."""
    saved = random_states(cuda)
    try:
        yield
    finally:
        set_random_states(saved)


def _counters(state: TrainState) -> dict[str, Any]:
    """TrainState's plain numbers (whatever fields it has), with the clock as elapsed seconds."""
    values = {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name not in _CLOCK_FIELDS}
    plain = {k: v for k, v in values.items() if isinstance(v, int | float | bool | str)}
    return {**plain, "experience_seconds": state.experience_seconds}


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Stateful(Protocol):
    """A part of a run with state of its own that a checkpoint keeps (an observer, the averaging)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class RunContents:
    """What a checkpoint saves beside the position and the counters, as the run holds it now."""

    model: nn.Module
    strategy: Any
    optimizer: torch.optim.Optimizer | None
    generator: torch.Generator | None
    """The runner's own draws (training augmentation), or None."""
    initial: Sequence[float]
    rows: Sequence[Sequence[float]]
    costs: Sequence[ExperienceCost]
    parts: Sequence[Stateful]
    """The run's other stateful parts (:class:`Stateful`), in the run's order."""


class Checkpointer:
    """Saves checkpoints between steps and turns SIGINT/SIGTERM into a checkpoint and a clean stop.

    Not an observer: the runner calls it after every observer of a step or an experience (so what it
    saves includes what they recorded there), with the run's training clock stopped, and calls
    :meth:`close` when the run ends, which restores the previous signal handlers. ``contents`` gives what
    the run holds at the moment of a save.
    """

    def __init__(self, settings: CheckpointSettings, folder: Path, run_id: int | None, seed: int,
                 contents: Callable[[], RunContents]) -> None:
        self.settings = settings
        self.folder = folder
        self.run_id = run_id
        self.seed = seed
        self.contents = contents
        self.signal_received: int | None = None
        self.previous_handlers: dict[int, Any] = {}

    def open(self) -> None:
        """Create the folder and catch SIGINT and SIGTERM (from the main thread only), before training."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"run.checkpoint_dir: cannot create {str(self.folder)!r} ({error.strerror}); "
                              "choose a writable folder") from None
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous_handlers[number] = signal.signal(number, self._request_stop)

    def close(self) -> None:
        """Restore the signal handlers that were in place before the run."""
        for number, handler in self.previous_handlers.items():
            signal.signal(number, handler)
        self.previous_handlers = {}

    def _request_stop(self, number: int, frame: FrameType | None) -> None:
        """A first signal stops at the next step boundary; a second one stops at once."""
        if self.signal_received is not None:
            raise KeyboardInterrupt
        self.signal_received = number

    def after_step(self, state: TrainState) -> None:
        """Save every ``every_steps`` steps, or when a signal asks to stop (then stop)."""
        every = self.settings.every_steps
        if self.signal_received is not None or (every and state.step % every == 0):
            self.save(state, within_experience=True)
        self._stop_if_asked(state)

    def after_experience(self, state: TrainState) -> None:
        """Save at the boundary after an experience was trained, evaluated and recorded."""
        self.save(state, within_experience=False)
        self._stop_if_asked(state)

    def _stop_if_asked(self, state: TrainState) -> None:
        if self.signal_received is not None:
            name = signal.Signals(self.signal_received).name
            how = f"`train(..., store=..., resume_run={self.run_id})` with the same store and arguments" \
                if self.run_id is not None else "a new run (a run without a results store cannot be resumed)"
            raise RunInterrupted(f"{name} at experience {state.experience}, step {state.step}: checkpoint saved in "
                                 f"{str(self.folder)!r}", self.run_id, how)

    def run_finished(self) -> None:
        """Delete the run's checkpoints now that it has finished and its result is stored, unless the
        settings keep them; the run's folder goes too, and the folder of all runs once it is empty."""
        if self.settings.keep_finished:
            return
        for path in checkpoint_files(self.folder):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # the run is finished and stored: a file left behind is only a warning
                logger.warning("could not delete the finished run's checkpoint %r (%s)", str(path), error.strerror)
                return
        default_root = self.run_id is not None and self.settings.directory is None
        for folder in (self.folder, self.folder.parent) if default_root else (self.folder,):
            try:
                folder.rmdir()
            except OSError:  # not empty (another run's checkpoints, a file of the user's) or already gone
                return

    def save(self, state: TrainState, within_experience: bool) -> Path | None:
        """Write a checkpoint of the run as it stands between two steps; None (and a warning) if the
        model holds NaN or infinite weights, so the last good checkpoint stays the newest."""
        contents = self.contents()
        if not _finite(contents.model):
            logger.warning("not saving a checkpoint at step %d: the model has NaN or infinite weights", state.step)
            return None
        completed = len(contents.rows)
        position = {"experience": state.experience if within_experience else completed, "epoch": state.epoch,
                    "epoch_samples": state.epoch_samples, "within_experience": within_experience}
        optimizer, generator = contents.optimizer, contents.generator
        payload = {
            "format": FORMAT, "version": VERSION, "run_id": self.run_id, "seed": self.seed,
            "position": position,
            "epoch_order": state.epoch_order.cpu() if within_experience and state.epoch_order is not None else None,
            "counters": _counters(state),
            "model": contents.model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "strategy": contents.strategy.state_dict(),
            "random": random_states(),
            "initial": list(contents.initial), "rows": [list(r) for r in contents.rows],
            "costs": [dataclasses.asdict(c) for c in contents.costs],
            "observers": [part.state_dict() for part in contents.parts],
            "generator": generator.get_state() if generator is not None else None,
        }
        path = self.folder / f"checkpoint-step{state.step:010d}-done{completed:04d}.pt"
        try:
            write_atomic(payload, path)
        except OSError as error:
            raise StorageError(f"run.checkpoint_dir: cannot write a checkpoint in {str(self.folder)!r} "
                               f"({error.strerror or error}); free space or choose another folder, then resume the "
                               "run from its previous checkpoint") from None
        for old in checkpoint_files(self.folder)[:-self.settings.keep]:
            old.unlink(missing_ok=True)
        return path


@dataclass
class Restored:
    """A checkpoint being applied to a freshly built run (model, strategy and state already set up)."""

    payload: dict[str, Any]

    @property
    def experience(self) -> int:
        return int(self.payload["position"]["experience"])

    @property
    def within_experience(self) -> bool:
        return bool(self.payload["position"]["within_experience"])

    @property
    def initial(self) -> list[float]:
        return list(self.payload["initial"])

    def rows(self) -> list[list[float]]:
        return [list(r) for r in self.payload["rows"]]

    def costs(self) -> list[ExperienceCost]:
        return [ExperienceCost(**c) for c in self.payload["costs"]]

    def restore(self, model: nn.Module, strategy: Any, state: TrainState,
                optimizer: torch.optim.Optimizer | None = None, parts: Sequence[Stateful] = (),
                generator: torch.Generator | None = None) -> None:
        """Load model, strategy, random states, counters and (when given and saved) optimizer and the
        states of the run's other parts (given in the order of the run that saved them).

        The runner calls it before the experience's hooks, and for a checkpoint taken inside an
        experience once more after them (and after building the optimizer), so that what the hooks
        redo is overwritten by what was saved after they ran the first time.
        """
        payload = self.payload
        model.load_state_dict(payload["model"])
        strategy.load_state_dict(payload["strategy"], model)
        if optimizer is not None and payload["optimizer"] is not None:
            optimizer.load_state_dict(payload["optimizer"])
        for part, saved in zip(parts, payload["observers"], strict=False):
            part.load_state_dict(saved)
        if generator is not None and payload["generator"] is not None:
            generator.set_state(payload["generator"])
        counters = dict(payload["counters"])
        experience_seconds = float(counters.pop("experience_seconds"))
        known = {f.name for f in dataclasses.fields(state)}
        for name, value in counters.items():
            if name in known:
                setattr(state, name, value)
        if self.within_experience:
            state.epoch_order = payload["epoch_order"]
            state.experience_started = time.perf_counter() - experience_seconds
            state.excluded_seconds, state.clock_paused = 0.0, None
        set_random_states(payload["random"])


    def resume_experience(self, model: nn.Module, strategy: Any, state: TrainState,
                          optimizer: torch.optim.Optimizer | None, reset_optimizer: bool,
                          generator: torch.Generator | None = None) -> None:
        """Called once the resumed experience's hooks ran and its optimizer was prepared (None when
        the experience does not train): inside an experience, restore everything again; at a boundary,
        only an optimizer carried across experiences."""
        if self.within_experience:
            self.restore(model, strategy, state, optimizer, generator=generator)
        elif optimizer is not None and not reset_optimizer and self.payload["optimizer"] is not None:
            optimizer.load_state_dict(self.payload["optimizer"])


def load(folder: Path, run_id: int | None, seed: int) -> Restored:
    """The newest usable checkpoint of a run, checked to belong to it."""
    payload = latest(folder)
    if payload["run_id"] != run_id or payload["seed"] != seed:
        raise ResumeError(f"the checkpoints in {str(folder)!r} belong to run {payload['run_id']} with seed "
                          f"{payload['seed']}, not run {run_id} with seed {seed}")
    return Restored(payload)



def resume_point(store: ResultsStore | None, run_id: int, settings: CheckpointSettings | None,
                 seed: int) -> Restored:
    """Check that stored run ``run_id`` may resume, load its newest usable checkpoint and mark it running."""
    if store is None:
        raise ResumeError(f"resuming run {run_id} needs the results store that holds it; pass store=")
    record = store.get(run_id)
    if record.status == "finished":
        raise ResumeError(f"run {run_id} already finished on {record.finished}; start a new run instead of "
                          "resuming it")
    if settings is None:
        raise ResumeError(f"run {run_id} cannot resume without checkpoints; drop --no-checkpoint")
    restored = load(settings.folder(store.path, run_id), run_id, seed)
    store.set_status(run_id, "running")
    return restored
