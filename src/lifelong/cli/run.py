"""The run commands of the ``lifelong`` command line: ``run`` (with ``--resume`` and ``--seeds``),
``runs``, ``show``, ``compare``, ``groups`` and ``strategies``. Each handler reads its arguments, calls
the Python API (:mod:`lifelong.experiment`, the results store) and prints what came back;
:func:`add_commands` registers them on the CLI's parser. The read commands open the store read-only:
they never create a database (a mistyped ``--db`` is an error naming the file) and can read one the
user may not write. Command wiring, so it lives in the ``cli`` layer.

The training and strategy modules (and with them torch) are imported inside the handlers that need
them, so that ``runs``, ``show``, ``compare`` and ``groups`` read the results store without importing
torch."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from lifelong.bounds import describe
from lifelong.cli.interrupts import continue_with, resume_command
from lifelong.cli.tables import (
    budget_rows,
    budget_table,
    first_sentence,
    fmt,
    headline,
    matrix_table,
    matrix_title,
    metric_names,
    metrics_table,
    stream_table,
)
from lifelong.config import RunConfig, RunSettings, load_config, parameters
from lifelong.errors import ConfigError
from lifelong.runner.results import GroupRecord, ResultsStore, RunRecord

if TYPE_CHECKING:
    from lifelong.runner.loop import RunResult

STATUSES = ("running", "finished", "failed", "interrupted")


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from lifelong.cli.protocol import run_with_seeds
    from lifelong.experiment import prepare, prepare_run
    from lifelong.protocol.seeds import parse_seeds

    if args.resume is not None:
        return resume_run(args, console)
    overrides = list(args.set) + ([f"run.db={json.dumps(args.db)}"] if args.db else []) \
        + ([f"run.seed={args.seed}"] if args.seed is not None else []) \
        + (["run.checkpoint=false"] if args.no_checkpoint else [])
    config = load_config(args.config, overrides)
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds is not None else None
    prepared = prepare(config)
    store = ResultsStore(config.run.db)
    # the stream is printed once the run is prepared, every setting checked: a refusal prints nothing else
    table = stream_table(prepared[0].summary(), prepared[0].name)
    with continue_with(resume_command(config.run.db)):
        if seeds is not None:
            args.training = True  # each seed's run is prepared then trained in turn
            return run_with_seeds(config, seeds, store, console, table)
        run = prepare_run(config, store=store, progress=config.run.progress, prepared=prepared)
        console.print(table)
        args.training = True  # read by lifelong.cli.main: an error from here on may be one rank's alone
        result = run.execute()
    print_result(result, config.run.db, console)
    return 0


def resume_run(args: argparse.Namespace, console: Console) -> int:
    """``lifelong run --resume ID``: continue a stored run with its stored configuration."""
    from lifelong.experiment import resume

    if args.config or args.set or args.seed is not None or args.seeds is not None or args.no_checkpoint:
        raise ConfigError(f"--resume {args.resume} continues the run's stored configuration; drop --config, "
                          "--set, --seed, --seeds and --no-checkpoint")
    db = args.db or RunSettings().db
    ResultsStore(db, read_only=True)  # the run is in a database that exists: never create one here
    args.training = True  # the stored run was accepted once: an error from here on is not a refusal
    with continue_with(resume_command(db)):
        result = resume(ResultsStore(db), args.resume, progress=True)
    print_result(result, db, console)
    return 0


def print_result(result: RunResult, db: str, console: Console) -> None:
    console.print(matrix_table(result.matrix.tolist(), matrix_title(result.metrics)))
    console.print(metrics_table(result.metrics, [c.as_dict() for c in result.costs]))
    console.print(f"run {result.run_id} stored in {db}")


def cmd_runs(args: argparse.Namespace, console: Console) -> int:
    if args.status is not None and args.status not in STATUSES:
        raise ConfigError(f"--status: unknown status {args.status!r}; allowed: {', '.join(STATUSES)}")
    if args.last is not None and args.last < 1:
        raise ConfigError(f"--last must be >= 1, got {args.last}")
    records = [r for r in ResultsStore(args.db, read_only=True).runs()
               if args.strategy in (None, r.strategy) and args.status in (None, r.status)]
    records = records[-args.last:] if args.last is not None else records
    # one line per run: no vertical rules, the creation time to the minute (UTC), nothing wrapped
    table = Table(title=f"runs in {args.db}", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    # a language model's final loss gets its own column when a listed run has one
    finals = ["final_accuracy", *(["final_loss"] if any("final_loss" in (r.metrics or {}) for r in records) else [])]
    numbers = ("id", "seed", *finals, "forgetting")
    for column in ("id", "created (UTC)", "status", "stream", "strategy", "seed", *finals, "forgetting"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", justify="right" if column in numbers else "left")
    for r in records:
        metrics = r.metrics or {}
        table.add_row(str(r.id), r.created[:16].replace("T", " "), r.status, r.name, r.strategy, str(r.seed),
                      *(fmt(metrics.get(name)) for name in finals), fmt(metrics.get("forgetting")))
    console.print(table)
    if not records:
        console.print("no run matches" if args.strategy or args.status else "no runs yet")
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    if (args.run_id is None) == (args.group is None):
        raise ConfigError("show: give a run id (`lifelong runs` lists them) or --group ID (`lifelong groups` "
                          "lists them), not both")
    store = ResultsStore(args.db, read_only=True)
    if args.group is not None:
        return show_group(store, store.group(args.group), console)
    record = store.get(args.run_id)
    kind = "test-time adaptation, method" if record.is_adaptation else "strategy"
    console.print(f"run {record.id}: {record.name}, {kind} {record.strategy}, seed {record.seed}, "
                  f"status {record.status}" + (f" ({record.error})" if record.error else ""))
    if record.rows and record.is_adaptation:
        accuracies = record.rows[-1]
        domains = domain_names(record)[:len(accuracies)]
        console.print(matrix_table([accuracies], "accuracy per domain (online predictions, in stream order)",
                                   columns=domains, rows=["accuracy"]))
    elif record.rows:
        console.print(matrix_table(record.rows, matrix_title(record.metrics or {})))
    console.print(metrics_table(record.metrics or {}, [e["cost"] for e in record.experiences]))
    if "budget" in (record.metrics or {}):
        budget = Table(title="budget (lifelong budget; the spent amount counts the closing hooks too)")
        budget.add_column("field")
        budget.add_column("value")
        for name, value in budget_rows(record.metrics["budget"]):  # type: ignore[index]
            budget.add_row(name, value)
        console.print(budget)
    config = Table(title="configuration")
    config.add_column("field")
    config.add_column("value")
    for section, values in record.config.items():
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            config.add_row(f"{section}.{key}".rstrip("."), str(value))
    console.print(config)
    environment = dict(record.environment)
    process = environment.pop("process", None)
    console.print("environment: " + ", ".join(f"{k} {v}" for k, v in environment.items())
                  + (f", process {process['pid']} on {process['host']}" if isinstance(process, dict) else ""))
    return 0


def domain_names(record: RunRecord) -> list[str]:
    """The domains of a test-time adaptation run, in stream order: stored with the run, or read from its
    per-domain errors (runs stored before the names were)."""
    stored = record.config.get("domains")
    if stored:
        return [str(name) for name in stored]
    errors = [name.removeprefix("error ") for name in (record.metrics or {}) if name.startswith("error ")]
    return errors or [str(name) for name in record.config.get("corruptions", [])]


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    store = ResultsStore(args.db, read_only=True)
    records = [store.get(run_id) for run_id in args.run_ids]
    table = Table(title="comparison")
    table.add_column("metric")
    for r in records:
        table.add_column(f"run {r.id} ({r.strategy})", justify="right")
    for name in metric_names([r.metrics or {} for r in records]):
        table.add_row(name, *(fmt((r.metrics or {}).get(name)) for r in records))
    table.add_row("train_seconds", *(f"{sum(e['cost']['seconds'] for e in r.experiences):.2f}" for r in records))
    table.add_row("steps", *(str(sum(e["cost"]["steps"] for e in r.experiences)) for r in records))
    if any(e["cost"].get("flops") for r in records for e in r.experiences):
        table.add_row("flops", *(f"{sum(e['cost'].get('flops', 0.0) for e in r.experiences):.4g}" for r in records))
    table.add_row("memory_bytes", *(str(max((e["cost"].get("memory_bytes", 0) for e in r.experiences), default=0))
                                    for r in records))
    budgets = [(r.metrics or {}).get("budget") for r in records]
    if any(budgets):
        for index, (name, _) in enumerate(budget_rows(next(b for b in budgets if b))[:4]):
            table.add_row(name, *(budget_rows(b)[index][1] if b else "-" for b in budgets))
    table.add_row("status", *(r.status for r in records))
    console.print(table)
    return 0


def cmd_groups(args: argparse.Namespace, console: Console) -> int:
    table = Table(title=f"groups in {args.db} (`lifelong show --group ID` prints one)")
    for column in ("id", "created", "kind", "name", "runs", "summary"):
        table.add_column(column, no_wrap=column != "summary", justify="right" if column in ("id", "runs") else "left")
    for group in ResultsStore(args.db, read_only=True).groups():
        table.add_row(str(group.id), group.created, group.kind, group.name, str(len(group.members)),
                      group_summary(group))
    console.print(table)
    return 0


def group_summary(group: GroupRecord) -> str:
    """One line on what a group found: the mean final accuracy over seeds, the best tuned setting, or the
    size of a sweep."""
    summary = group.summary or {}
    final = headline(summary)[0]
    if group.kind == "seeds" and final in summary:
        value = summary[final]
        return f"{final} {_mean_std(value)} over {value['n']} seeds"
    if group.kind == "protocol" and "best_value" in summary:
        final = summary.get("evaluation", {}).get("final_accuracy")
        return f"best {summary['objective']} {summary['best_value']:.3f} on validation" + \
            (f"; evaluation final_accuracy {_mean_std(final)}" if final else "")
    if group.kind == "sweep" and summary:
        return f"{len(summary)} configurations"
    if group.kind == "budget" and summary.get("cells"):
        cells = summary["cells"]
        return f"{len({c['label'] for c in cells})} strategies x {len({c['level'] for c in cells})} budget levels"
    return "-"


def _mean_std(value: dict[str, Any]) -> str:
    return f"{value['mean']:.3f}" + (f" ± {value['std']:.3f}" if value.get("std") is not None else "")


def show_group(store: ResultsStore, group: GroupRecord, console: Console) -> int:
    """``lifelong show --group ID``: the group's runs and what it found over them."""
    from lifelong.metrics.aggregate import Aggregate  # SciPy: only when a summary is printed
    from lifelong.protocol.seeds import summary_table

    console.print(f"group {group.id}: {group.kind} {group.name!r}, created {group.created}")
    records = [store.get(member["run_id"]) for member in group.members]
    final = headline(next((r.metrics for r in records if r.metrics), {}))[0]
    members = Table(title="runs")
    for column in ("run", "role", "label", "status", final):
        members.add_column(column, justify="right" if column in ("run", final) else "left")
    for member, record in zip(group.members, records, strict=True):
        members.add_row(str(record.id), member["role"], member["label"], record.status,
                        fmt((record.metrics or {}).get(final)))
    console.print(members)
    summary = group.summary or {}
    if group.kind == "budget":
        console.print(budget_table(records, f"budget {group.name!r}: final accuracy at equal "
                                            f"{group.settings.get('unit', 'compute')} (means over seeds)"))
        return 0
    if group.kind == "sweep":
        table = Table(title="sweep (mean ± std over seeds)")
        columns = headline(next(iter(summary.values()), {}))
        for column in ("configuration", "seeds", *columns):
            table.add_column(column, justify="left" if column == "configuration" else "right")
        for label, values in summary.items():
            n = max((value["n"] for value in values.values()), default=0)
            table.add_row(label, str(n), *(_mean_std(values[m]) if m in values else "-" for m in columns))
        console.print(table)
        return 0
    if group.kind == "protocol" and "best_params" in summary:
        best = ", ".join(f"{k}={fmt(v)}" for k, v in summary["best_params"].items())
        console.print(f"best {summary['objective']} on validation {summary['best_value']:.3f} with {best} "
                      f"(trial {summary['best_trial']}, run {summary['best_tuning_run']})")
        summary = summary.get("evaluation", {})
    if summary:
        console.print(summary_table({name: Aggregate(**value) for name, value in summary.items()},
                                    f"{group.kind} {group.name}: mean ± std and 95% interval"))
    return 0


def cmd_strategies(args: argparse.Namespace, console: Console) -> int:
    from lifelong.strategies import STRATEGIES

    table = Table(title="strategies")
    table.add_column("name")
    table.add_column("hyperparameters (default)")
    table.add_column("summary")
    for name, cls in STRATEGIES.items():
        params = ", ".join(f"{k}={p.default!r}" + (f" ({bounds})" if (bounds := describe(p.annotation)) else "")
                           for k, p in parameters(cls, extras=True).items()) or "-"
        table.add_row(name, params, first_sentence(cls.__doc__))
    console.print(table)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``run``, ``runs``, ``show``, ``compare``, ``groups`` and ``strategies`` on the CLI's subparsers."""
    run = sub.add_parser("run", help="train a strategy on a stream and store the run",
                         description="Train a strategy on a stream and store the run. `lifelong strategies`, "
                                     "`lifelong models` and `lifelong scenarios` list the names each section takes, "
                                     "with their parameters and defaults.")
    sections = ", ".join(f"[{section}]" for section in RunConfig.model_fields)
    run.add_argument("--config", help=f"TOML file with one table per section: {sections}")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override one field, e.g. --set strategy.name=ewc (repeatable)")
    run.add_argument("--db", help="results database (default: run.db, ./lifelong-runs.db)")
    run.add_argument("--seed", type=int, help="run seed (same as --set run.seed=N)")
    run.add_argument("--resume", type=int, metavar="RUN_ID",
                     help="continue an interrupted run from its newest checkpoint, with its stored configuration")
    run.add_argument("--no-checkpoint", action="store_true", help="save no checkpoints (quick runs)")
    run.add_argument("--seeds", metavar="S1,S2,...",
                     help="run once per seed and report mean ± std and a 95%% interval, e.g. --seeds 0,1,2")
    run.set_defaults(handler=cmd_run)
    runs = sub.add_parser("runs", help="list stored runs, one line each")
    runs.add_argument("--strategy", help="only runs of this strategy")
    runs.add_argument("--status", help=f"only runs with this status ({', '.join(STATUSES)})")
    runs.add_argument("--last", type=int, metavar="N", help="only the N newest runs")
    show = sub.add_parser("show", help="print one stored run (or a group of runs with --group)")
    show.add_argument("run_id", type=int, nargs="?")
    show.add_argument("--group", type=int, metavar="ID", help="print a group: seeds, sweep or tuning protocol")
    compare = sub.add_parser("compare", help="put stored runs' metrics side by side")
    compare.add_argument("run_ids", type=int, nargs="+")
    groups = sub.add_parser("groups", help="list the groups of runs (seeds, sweeps, tuning protocols)")
    for p, handler in ((runs, cmd_runs), (show, cmd_show), (compare, cmd_compare), (groups, cmd_groups)):
        p.add_argument("--db", default="lifelong-runs.db", help="results database (read, never created)")
        p.set_defaults(handler=handler)
    strategies = sub.add_parser("strategies", help="list strategies with their hyperparameters")
    strategies.set_defaults(handler=cmd_strategies)
