"""Sweeps: a grid over strategies and hyperparameters, each cell run under every seed, resumable.

A sweep file (TOML) names a base run configuration and the axes::

    name = "digits-grid"            # the group the runs are stored under (default: the file's stem)
    config = "job.toml"             # optional base run configuration, relative to this file
    set = ["optim.epochs=2"]        # fixed overrides, the syntax of `lifelong run --set`
    seeds = [0, 1, 2]

    [grid]                          # axes shared by every strategy: "section.field" = [values]
    "optim.lr" = [0.01, 0.03]

    [strategies.naive]              # one table per strategy; a list is an axis, a scalar is fixed
    [strategies.er]
    buffer_size = [100, 200]

A cell is identified in the results store by its resolved configuration, seed included
(:func:`lifelong.runner.results.config_key`): on a restart every cell that already has a finished run
is skipped, so an interrupted sweep only runs what is missing. Seeds are the outer loop, so a sweep
stopped half-way already has one seed of every cell.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifelong.config import RunConfig, describe_validation_error, load_config
from lifelong.errors import ConfigError, MissingFileError
from lifelong.experiment import build_strategy, prepare, refuse_save_pretrained, resolve_config, stored_run
from lifelong.metrics.aggregate import Aggregate, aggregate_metrics
from lifelong.runner.results import ResultsStore


class SweepFile(BaseModel):
    """The validated contents of a sweep file."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    config: str | None = None
    set: list[str] = []
    seeds: list[int] = Field([0], min_length=1)
    grid: dict[str, list[Any]] = {}
    strategies: dict[str, dict[str, Any]] = Field(min_length=1)


@dataclass
class Cell:
    """One run of a sweep: a strategy, its hyperparameters and shared settings, and a seed."""

    strategy: str
    settings: dict[str, Any]
    """``"section.field" -> value`` for every swept or fixed hyperparameter of the cell."""
    seed: int
    config: RunConfig

    @property
    def label(self) -> str:
        return " ".join([self.strategy, *(f"{k}={v}" for k, v in self.settings.items())])


@dataclass
class Sweep:
    """A parsed sweep: its name and cells, in run order."""

    name: str
    cells: list[Cell]
    settings: dict[str, Any] = field(default_factory=dict)


def _override(key: str, value: Any) -> str:
    """``section.field=value`` with the value written as TOML (JSON scalars and lists are TOML)."""
    return f"{key}={json.dumps(value)}"


def load_sweep(path: str | Path, db: str | None = None) -> Sweep:
    """Read and validate a sweep file, resolving every cell's run configuration and building its
    components once (so a bad value fails before anything trains). ``db`` overrides the base
    configuration's ``run.db``."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--config: {str(path)!r} is a directory; give the path of a sweep TOML file")
    if not file.is_file():
        raise MissingFileError(f"--config: no such sweep file {str(path)!r}")
    try:
        sweep = SweepFile.model_validate(tomllib.loads(file.read_text()))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config {str(path)!r}: not valid TOML: {error}") from None
    except pydantic.ValidationError as error:
        raise ConfigError(describe_validation_error(error, "sweep", model=SweepFile)) from None
    if len(set(sweep.seeds)) != len(sweep.seeds):  # a repeated seed would count one run twice in the summary
        raise ConfigError(f"sweep.seeds: expected distinct integers, got {sweep.seeds}")
    for key, values in sweep.grid.items():
        if not values:
            raise ConfigError(f"sweep.grid.{key}: an axis needs at least one value, got []")
    base = str(file.parent / sweep.config) if sweep.config else None
    if base is not None and not Path(base).is_file():
        raise MissingFileError(f"sweep.config in {str(path)!r}: no such run configuration {base!r} (the path is "
                               "relative to the sweep file)")
    fixed = sweep.set + ([_override("run.db", db)] if db else [])
    cells = []
    for seed in sweep.seeds:
        for strategy, params in sweep.strategies.items():
            axes = {f"strategy.{k}": (v if isinstance(v, list) else [v]) for k, v in params.items()}
            axes.update(sweep.grid)
            for values in itertools.product(*axes.values()):
                settings = dict(zip(axes, values, strict=True))
                overrides = [*fixed, f"strategy.name={strategy}",
                             *(_override(k, v) for k, v in settings.items()), f"run.seed={seed}"]
                cells.append(Cell(strategy, settings, seed, load_config(base, overrides)))
    prepare(cells[0].config)  # the shared dataset, scenario and model settings
    for cell in cells:
        build_strategy(cell.config)
    return Sweep(sweep.name or file.stem, cells, sweep.model_dump())


@dataclass
class CellOutcome:
    """A cell's stored run and whether this call trained it (False: found finished in the store)."""

    cell: Cell
    run_id: int
    trained: bool
    metrics: dict[str, Any]


@contextlib.contextmanager
def cell_progress(console: Console, name: str, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar over a protocol's ``total`` cells (on a terminal only); the function it yields
    moves it to the next cell, naming it (the first call names the first cell)."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[cell]}"), TimeElapsedColumn(), console=console,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(name, total=total, cell="")
        started = False

        def advance(cell: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, cell=cell)

        yield advance
        if started:
            progress.advance(task)


def run_sweep(sweep: Sweep, store: ResultsStore, console: Console | None = None, launcher: str = "local",
              folder: Path | None = None, resources: dict[str, Any] | None = None,
              address: str | None = None) -> tuple[int, list[CellOutcome]]:
    """Run every cell that has no finished run in ``store``; return the sweep's group id and each
    cell's outcome. ``launcher`` (:mod:`lifelong.protocol.launchers`): ``local`` runs the cells here, one
    after another (an interrupted one resumes from its checkpoint); ``slurm``, ``submitit-local`` or ``ray``
    (the cluster at ``address``) runs the missing cells as jobs with their files in ``folder`` and imports the
    runs the jobs return."""
    for cell in sweep.cells:
        refuse_save_pretrained(cell.config, "a sweep")
    group_id = store.find_group("sweep", sweep.name) or store.create_group("sweep", sweep.name, sweep.settings)
    submitted: dict[int, int] = {}  # cell index -> run id, for the cells a launcher's jobs ran
    if launcher != "local":
        from lifelong.protocol.launchers import run_jobs

        missing = [index for index, cell in enumerate(sweep.cells)
                   if store.find_finished(resolve_config(cell.config)) is None]
        if missing:
            ran = run_jobs([sweep.cells[index].config for index in missing], store, launcher,
                           folder or Path(f"{store.path}-jobs"), resources, address)
            submitted = dict(zip(missing, ran, strict=True))
    outcomes = []
    with cell_progress(console or Console(stderr=True), f"sweep {sweep.name}", len(sweep.cells)) as advance:
        for index, cell in enumerate(sweep.cells):
            advance(f"{cell.label} seed={cell.seed}")
            if index in submitted:
                run_id, trained = submitted[index], True
            else:  # found finished, or (local launcher) resumed or trained here
                run_id, trained = stored_run(cell.config, store)
            store.add_to_group(group_id, run_id, "cell", f"{cell.label} seed={cell.seed}")
            outcomes.append(CellOutcome(cell, run_id, trained, store.get(run_id).metrics or {}))
    store.set_group_summary(group_id, {label: {name: value.as_dict() for name, value in summary.items()}
                                       for label, summary in summarize(outcomes).items()})
    return group_id, outcomes


def summarize(outcomes: list[CellOutcome]) -> dict[str, dict[str, Aggregate]]:
    """Each configuration's metrics aggregated over its seeds, keyed by the cell label."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for outcome in outcomes:
        by_label.setdefault(outcome.cell.label, []).append(outcome.metrics)
    return {label: aggregate_metrics(metrics) for label, metrics in by_label.items()}


def sweep_table(outcomes: list[CellOutcome], metrics: tuple[str, ...]) -> Table:
    """One row per configuration: seeds and each metric's mean ± std over them."""
    table = Table(title="sweep (mean ± std over seeds)")
    table.add_column("configuration")
    table.add_column("seeds", justify="right")
    for name in metrics:
        table.add_column(name, justify="right")
    for label, summary in summarize(outcomes).items():
        n = max((value.n for value in summary.values()), default=0)
        table.add_row(label, str(n), *(f"{summary[m].mean:.3f} ± {summary[m].std or 0:.3f}" if m in summary else "-"
                                       for m in metrics))
    return table
