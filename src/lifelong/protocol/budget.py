"""Compute-matched comparison: every strategy trained at the same compute per experience.

Prabhu et al. (CVPR 2023, "Computationally Budgeted Continual Learning: What Does Matter?") show that
once every method gets the same compute per time step, none of the published methods they test beats
experience replay with uniform sampling from memory: comparisons at equal epochs reward methods for
the extra compute they spend. This protocol states a budget once per experience and runs every
strategy at it:

* **The unit**: FLOPs (``optim.max_flops``, counted on what each step really runs: replayed batches,
  old-model passes, reference gradients, the runner's extra passes), training seconds
  (``optim.max_seconds``) or optimizer steps (``optim.max_steps``).
* **The level**: a multiple of a measured reference, by default ``1x = naive's cost of one epoch of the
  experience`` (``reference="naive"``: that strategy run for one epoch under the base configuration,
  once per seed, stored and reused from the results store; FLOP counts are deterministic, seconds are
  this machine's), or with ``absolute=True`` an amount of the unit per experience. Experiences of
  different sizes get budgets of their own (a per-experience list in ``optim.max_*``). A strategy that
  trains all experiences at once (``joint``) gets the sum.
* **Every strategy at every level**: training stops when the experience's budget is spent, as the
  runner's budgets do (:mod:`lifelong.runner.budget`: the schedule anneals where the budget ends). A
  strategy that cannot spend it (a plan that does not train, e.g. NCM after adaptation; an epoch cap
  reached first) reports what it used, and one whose closing hook (a Fisher estimate, herding, class
  means) runs after training reports that on top: every run stores its budget and what it spent as
  ``metrics["budget"]`` (:func:`budget_record`), so the comparison is drawn against the compute each run
  really spent (``lifelong report``: accuracy against compute with the Pareto front, and against memory).

:func:`run_budgeted` is the Python entry point (``lifelong budget`` on the command line); every run is
stored and linked to one ``budget`` group, and a rerun skips the finished cells and resumes an
interrupted one from its checkpoint.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from lifelong.config import Component, RunConfig, validate_config
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError
from lifelong.experiment import build_strategy, prepare, refuse_save_pretrained, resolve_config, run_config, stored_run
from lifelong.metrics.aggregate import aggregate_metrics
from lifelong.optim.setup import resolve
from lifelong.protocol.sweep import cell_progress
from lifelong.runner.results import ResultsStore
from lifelong.runner.validation import check_capabilities
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StrategyContext
from lifelong.world import World

UNITS = {"flops": "max_flops", "seconds": "max_seconds", "steps": "max_steps"}
"""Each budget unit and the ``optim`` field that caps it (the cost field recorded per experience has
the unit's name)."""

BUDGET_FIELDS = ("max_steps", "max_samples", "max_seconds", "max_flops")

FORWARD_SHARE = 3
"""How many times cheaper than a naive step a strategy's step may be before its epoch cap, not its
budget, ends an experience: a step that runs the model forward on its batch costs at least that forward
pass, about a third of the forward and backward pass of a naive step (the backward pass costs about
two forward passes, Kaplan et al. 2020). FLOP and seconds budgets get this many times the epochs a
naive-cost step needs; step budgets are exact."""


@dataclass(frozen=True)
class BudgetSettings:
    """How a budget is stated: its unit, its levels and what a level is a multiple of."""

    unit: str = "flops"
    """``flops``, ``seconds`` or ``steps``."""
    levels: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    """The budget levels, an axis of the comparison: multiples of the reference, or (``absolute``)
    amounts of the unit per experience."""
    reference: str = "naive"
    """The strategy whose cost of one epoch of each experience is the level 1x (measured under the base
    configuration, once per seed)."""
    absolute: bool = False
    """Levels are amounts of the unit per experience, not multiples of the reference (which is still
    measured: the protocol sets the epochs from it and records each run's budget relative to it)."""
    name: str = "budget"
    """The ``budget`` group the runs are linked to; a rerun of the same name continues it."""

    def check(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"budget unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if not self.levels or not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in self.levels):
            raise ConfigError(f"budget levels must be finite numbers > 0, e.g. 0.25,0.5,1,2,4; got {list(self.levels)}")
        if len(set(self.levels)) != len(self.levels):
            raise ConfigError(f"budget levels must be distinct, got {list(self.levels)}")
        if self.reference not in STRATEGIES:
            raise ConfigError(f"budget reference {self.reference!r} is not a strategy; `lifelong strategies` lists "
                              "them (the default is naive)")
        if STRATEGIES[self.reference].CAPABILITIES.joint:
            raise ConfigError(f"budget reference {self.reference!r} trains all experiences at once; the reference "
                              "is a cost per experience: give a strategy that trains each in turn, e.g. naive")


@dataclass(frozen=True)
class Reference:
    """What the reference cost, per experience, for one seed."""

    run_id: int
    cost: list[float]
    """The reference's cost of each experience, in the budget's unit."""
    steps: list[int]
    """Its optimizer steps in each experience (one epoch)."""

    def step_cost(self, experience: int) -> float:
        """The cost of one of its steps in ``experience``."""
        return self.cost[experience] / max(self.steps[experience], 1)


@dataclass(frozen=True)
class BudgetRow:
    """One run of the protocol: a strategy at a budget level and a seed."""

    label: str
    strategy: str
    seed: int
    level: float
    run_id: int
    trained: bool
    """False: the run was found finished in the store."""
    budget: dict[str, Any]
    """The run's ``metrics["budget"]`` (:func:`budget_record`)."""
    metrics: dict[str, Any] = field(repr=False)
    memory_bytes: int = 0
    """The most bytes the strategy kept after any experience (``memory_bytes`` of the cost)."""

    def as_dict(self) -> dict[str, Any]:
        """A flat row (what a benchmark prints): identity, budget, spent compute, accuracy and memory."""
        return {"label": self.label, "strategy": self.strategy, "seed": self.seed, "level": self.level,
                "unit": self.budget["unit"], "run_id": self.run_id, "limit": self.budget["limit"],
                "spent": self.budget["spent"], "spent_fraction": self.budget["spent_fraction"],
                "final_accuracy": self.metrics.get("final_accuracy"), "forgetting": self.metrics.get("forgetting"),
                "memory_bytes": self.memory_bytes}


def strategy_components(strategies: Mapping[str, Mapping[str, Any]] | Sequence[str],
                        config: RunConfig) -> dict[str, Component]:
    """Each label's strategy component: ``{"er": {"buffer_size": 100}}`` (a label is the strategy's name
    unless its settings give a ``name``, so ``{"er-100": {"name": "er", "buffer_size": 100}}`` and
    ``{"er-500": ...}`` compare two settings), or a list of names, each with the base configuration's
    settings when it names that strategy and its own defaults otherwise."""
    if isinstance(strategies, str) or not strategies:
        raise ConfigError(f"budget: give the strategies to compare, e.g. naive,er,derpp; got {strategies!r}")
    if isinstance(strategies, Mapping):
        components = {label: Component(**{"name": label, **dict(settings)}) for label, settings in strategies.items()}
    else:
        if len(set(strategies)) != len(strategies):
            raise ConfigError(f"budget: each strategy once, got {list(strategies)}")
        base = config.strategy
        components = {name: base if name == base.name else Component(name=name) for name in strategies}
    unknown = [c.name for c in components.values() if c.name not in STRATEGIES]
    if unknown:
        raise ConfigError(f"budget: unknown strategy {unknown[0]!r}; `lifelong strategies` lists them")
    return components


def _with(config: RunConfig, strategy: Component, seed: int, optim: Mapping[str, Any]) -> RunConfig:
    """``config`` with another strategy, seed and optimization settings, validated."""
    data = config.model_dump()
    data["strategy"] = strategy.model_dump()
    data["run"]["seed"] = seed
    data["optim"].update(optim)
    return validate_config(data)


def measure_reference(config: RunConfig, settings: BudgetSettings, seed: int, store: ResultsStore,
                      group_id: int) -> Reference:
    """The reference strategy's cost of one epoch of each experience under ``config`` at ``seed``: a
    stored run of it (reused when the store already has it finished), linked to the group."""
    reference = _with(config, Component(name=settings.reference), seed,
                      {"epochs": 1, **dict.fromkeys(BUDGET_FIELDS), "count_flops": settings.unit == "flops"
                       or config.optim.count_flops})
    run_id = store.find_finished(resolve_config(reference))
    if run_id is None:
        run_id = run_config(reference, store=store).run_id
    assert run_id is not None
    store.add_to_group(group_id, run_id, "reference", f"{settings.reference} 1 epoch seed {seed}")
    costs = [e["cost"] for e in store.get(run_id).experiences]
    return Reference(run_id, [float(c[settings.unit]) for c in costs], [int(c["steps"]) for c in costs])


def experience_limits(settings: BudgetSettings, level: float, reference: Reference) -> list[float]:
    """The budget of each experience at ``level``, in the unit (steps rounded, at least one)."""
    amounts = [level] * len(reference.cost) if settings.absolute else [level * cost for cost in reference.cost]
    return [float(max(1, round(a))) for a in amounts] if settings.unit == "steps" else amounts


def budget_epochs(config: RunConfig, stream: Stream, limits: Sequence[float], reference: Reference, unit: str) -> int:
    """Epochs enough for the budget, not the epoch count, to end every experience the strategy trains.

    The protocol compares strategies at equal compute, so the epoch cap must not bind first: a budget of
    ``s`` naive steps in an experience the strategy trains on ``train_size`` samples needs ``s`` over its
    steps per epoch epochs (times the adaptive batch size's largest growth, which shortens epochs), and
    :data:`FORWARD_SHARE` times that for a FLOP or seconds budget, whose steps may cost less than naive's.
    The runner re-plans FLOP and seconds budgets after every step, so the schedule's horizon ends where
    the budget does; only the first step of an experience is planned from these epochs. The strategy's
    plan is read from a strategy of its own, set up for the stream as the runner sets one up."""
    strategy = build_strategy(config)
    strategy.setup(StrategyContext(stream, config.run.seed, World(), None))
    setup = resolve(config.optim)
    test = setup.batch_size_test
    growth = test.max_batch_size / setup.batch_size if test is not None else 1.0
    share = 1 if unit == "steps" else FORWARD_SHARE
    steps = [limit / reference.step_cost(index) for index, limit in enumerate(limits)]  # naive steps per experience
    joint = strategy.capabilities.joint
    experiences: Sequence[Experience] = (stream.joined(),) if joint else stream.experiences
    needed = 1
    for index in range(len(experiences)):
        declared = strategy.plan(experiences, index)
        if declared.trains:
            per_epoch = math.ceil(setup.epoch_length(declared.train_size, setup.batch_size) / setup.batch_size)
            budget = sum(steps) if joint else steps[index]
            needed = max(needed, math.ceil(share * growth * budget / per_epoch))
    return needed


def budget_record(section: Mapping[str, Any], optim: Mapping[str, Any], costs: Sequence[Mapping[str, Any]],
                  reference: Reference) -> dict[str, Any]:
    """What a budgeted run was given and what it spent, as stored in ``metrics["budget"]``: the unit and
    level, the reference (its strategy, run and cost per experience), the limit and the spent amount of
    each experience and in all, the spent fraction, and the epochs the protocol set."""
    unit = section["unit"]
    cap = optim[UNITS[unit]]
    limits = [float(v) for v in cap] if isinstance(cap, list) else [float(cap)] * len(costs)
    spent = [float(c[unit]) for c in costs]
    total = sum(limits)
    return {"unit": unit, "level": section["level"], "absolute": section["absolute"], "label": section["label"],
            "reference": section["reference"], "reference_run": reference.run_id,
            "reference_per_experience": reference.cost, "limit_per_experience": limits,
            "spent_per_experience": spent, "limit": total, "spent": sum(spent),
            "spent_fraction": sum(spent) / total if total > 0 else None, "epochs": optim["epochs"]}


def run_budgeted(config: RunConfig, strategies: Mapping[str, Mapping[str, Any]] | Sequence[str],
                 levels: Sequence[float] = BudgetSettings.levels, seeds: Sequence[int] = (0,),
                 store: ResultsStore | None = None, *, unit: str = "flops", reference: str = "naive",
                 absolute: bool = False, name: str = "budget", console: Console | None = None) -> list[BudgetRow]:
    """Run every strategy at every budget level under every seed (seeds the outer loop), on the base
    configuration ``config``, and return one :class:`BudgetRow` per run.

    ``strategies``: names, or labels mapped to strategy settings (:func:`strategy_components`).
    ``levels``, ``unit``, ``reference``, ``absolute``, ``name``: :class:`BudgetSettings`. ``store``
    (default: ``config.run.db``) holds every run, each run's ``metrics["budget"]``, and the ``budget``
    group ``name`` linking them with a summary per strategy and level; a rerun with the same arguments
    trains only what is missing. The base configuration sets no budget of its own: the protocol sets
    ``optim.max_<unit>`` (one per experience) and ``optim.epochs`` (:func:`budget_epochs`) of each run."""
    settings = BudgetSettings(unit, tuple(levels), reference, absolute, name)
    settings.check()
    refuse_save_pretrained(config, "lifelong budget")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"budget seeds must be distinct integers >= 0, got {list(seeds)}")
    given = [f"optim.{key}" for key in BUDGET_FIELDS if getattr(config.optim, key) is not None]
    if given:
        raise ConfigError(f"budget: the protocol sets each run's budget; leave {', '.join(given)} unset in the base "
                          "configuration")
    components = strategy_components(strategies, config)
    store = store or ResultsStore(config.run.db)
    for label, component in components.items():  # every strategy built and checked before anything trains
        checked = _with(config, component, seeds[0], {})
        stream, _, strategy = prepare(checked)
        with warnings.catch_warnings():  # what the checks warn about, each run warns about again
            warnings.simplefilter("ignore")
            check_capabilities(strategy, stream, checked.optim)
    group_id = store.find_group("budget", name) or store.create_group(
        "budget", name, {"unit": unit, "levels": list(settings.levels), "reference": reference, "absolute": absolute,
                         "strategies": {label: c.model_dump() for label, c in components.items()},
                         "seeds": list(seeds)})
    rows = []
    with cell_progress(console or Console(stderr=True), name, len(seeds) * len(components) * len(levels)) as advance:
        for seed in seeds:
            measured = measure_reference(config, settings, seed, store, group_id)
            for label, component in components.items():
                for level in settings.levels:
                    advance(f"{label} {level:g}x seed {seed}")
                    rows.append(_budget_cell(config, settings, label, component, level, seed, measured, store,
                                             group_id))
    store.set_group_summary(group_id, summarize(rows))
    return rows


def _budget_cell(config: RunConfig, settings: BudgetSettings, label: str, component: Component, level: float,
                 seed: int, reference: Reference, store: ResultsStore, group_id: int) -> BudgetRow:
    """One strategy at one level and seed: configured, run (or found), its budget record stored."""
    limits = experience_limits(settings, level, reference)
    base = _with(config, component, seed, {})
    stream, model, strategy = prepare(base)
    epochs = budget_epochs(base, stream, limits, reference, settings.unit)
    whole = int if settings.unit == "steps" else float
    cap = whole(sum(limits)) if strategy.capabilities.joint else [whole(limit) for limit in limits]
    cell = _with(config, component, seed, {"epochs": epochs, UNITS[settings.unit]: cap})
    section = {"unit": settings.unit, "level": level, "absolute": settings.absolute, "reference": settings.reference,
               "label": label}
    run_id, trained = stored_run(cell, store, (stream, model, strategy), {"budget": section})
    record = store.get(run_id)
    costs = [e["cost"] for e in record.experiences]
    budget = budget_record(section, record.config["optim"], costs, reference)
    store.add_metrics(run_id, {"budget": budget})
    store.add_to_group(group_id, run_id, "cell", f"{label} {level:g}x seed {seed}")
    return BudgetRow(label, component.name, seed, level, run_id, trained, budget,
                     {**(record.metrics or {}), "budget": budget},
                     max((int(c.get("memory_bytes", 0)) for c in costs), default=0))


def summarize(rows: Sequence[BudgetRow]) -> dict[str, Any]:
    """The group's summary: per strategy label and level, the budget's unit and the mean over seeds of
    what was spent, and every metric aggregated over the seeds (mean, std, 95% interval)."""
    cells: dict[tuple[str, float], list[BudgetRow]] = {}
    for row in rows:
        cells.setdefault((row.label, row.level), []).append(row)
    summary = []
    for (label, level), members in cells.items():
        metrics = aggregate_metrics([{**row.metrics, "spent": row.budget["spent"],
                                      "spent_fraction": row.budget["spent_fraction"],
                                      "memory_bytes": row.memory_bytes} for row in members])
        summary.append({"label": label, "level": level, "unit": members[0].budget["unit"],
                        "seeds": [row.seed for row in members], "runs": [row.run_id for row in members],
                        "metrics": {key: value.as_dict() for key, value in metrics.items()}})
    return {"cells": summary}
