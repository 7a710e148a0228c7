"""Multi-seed runs: the same configuration under several seeds, stored as a group with the mean,
standard deviation and t-based 95% interval of every metric (:mod:`lifelong.metrics.aggregate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.table import Table

from lifelong.config import RunConfig
from lifelong.errors import ConfigError, TrainingError
from lifelong.experiment import refuse_save_pretrained, resolve_config, run_config
from lifelong.metrics.aggregate import Aggregate, aggregate_metrics
from lifelong.runner.loop import RunResult
from lifelong.runner.results import ResultsStore


@dataclass
class SeedsResult:
    """The runs of each seed, the metrics aggregated over them, and the stored group's id."""

    runs: list[RunResult]
    summary: dict[str, Aggregate]
    group_id: int | None
    diverged: dict[int, str] = field(default_factory=dict)
    """Seeds whose loss diverged, with the error (only with ``tolerate_divergence``); left out of the summary."""


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; distinct non-negative integers only (``option`` names the setting in
    errors, e.g. ``--eval-seeds``)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"{option}: expected distinct comma-separated integers >= 0 such as 0,1,2, got {text!r}")
    return seeds


def run_seeds(config: RunConfig, seeds: Sequence[int], store: ResultsStore | None = None,
              progress: bool = False, group_id: int | None = None, role: str = "seed",
              reuse: bool = False, tolerate_divergence: bool = False) -> SeedsResult:
    """Run ``config`` once per seed (the seed also drives class order and initialisation) and aggregate.

    With a ``store`` the runs are linked to ``group_id`` under ``role``; without a group id a new
    ``seeds`` group is created and given the aggregate as its summary. With ``reuse`` a seed whose
    resolved configuration already has a finished run in the store takes that run instead of training
    again (a run is a deterministic function of its configuration and seed). With ``tolerate_divergence`` a
    seed whose loss diverges is recorded in ``diverged`` (its stored run says failed) and the others go on.
    """
    if len(seeds) > 1:
        refuse_save_pretrained(config, "--seeds")
    own_group = store is not None and group_id is None
    runs, diverged = [], {}
    for seed in seeds:
        seeded = config.model_copy(update={"run": config.run.model_copy(update={"seed": seed})})
        finished = store.find_finished(resolve_config(seeded)) if store is not None and reuse else None
        try:
            result = RunResult.from_record(store.get(finished)) if store is not None and finished is not None \
                else run_config(seeded, store=store, progress=progress)
        except TrainingError as error:
            if not tolerate_divergence:
                raise
            diverged[seed] = str(error)
            continue
        if store and result.run_id is not None:
            if group_id is None:  # made with its first run: a configuration refused before training leaves none
                group_id = store.create_group("seeds", f"{config.strategy.name} seeds {','.join(map(str, seeds))}",
                                              {"seeds": list(seeds)})
            store.add_to_group(group_id, result.run_id, role, f"seed {seed}")
        runs.append(result)
    summary = aggregate_metrics([result.metrics for result in runs])
    if store and own_group and group_id is not None:
        store.set_group_summary(group_id, {name: value.as_dict() for name, value in summary.items()})
    return SeedsResult(runs, summary, group_id, diverged)


def summary_table(summary: dict[str, Aggregate], title: str) -> Table:
    """Each metric's mean ± std and 95% interval."""
    table = Table(title=title)
    for column in ("metric", "n", "mean", "std", "95% interval"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in summary.items():
        table.add_row(name, str(value.n), f"{value.mean:.3f}", "-" if value.std is None else f"{value.std:.3f}",
                      "-" if value.low is None else f"[{value.low:.3f}, {value.high:.3f}]")
    return table
