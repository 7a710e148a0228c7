"""The run commands of the ``lifelong`` command line: ``run`` (with ``--resume`` and ``--seeds``),
``runs``, ``show``, ``compare`` and ``strategies``. Each handler reads its arguments, calls the Python
API (:mod:`lifelong.experiment`, the results store) and prints what came back; :func:`add_commands`
registers them on the CLI's parser. Command wiring, so it lives in the ``cli`` layer.

The training and strategy modules (and with them torch) are imported inside the handlers that need
them, so that ``runs``, ``show`` and ``compare`` read the results store without importing torch."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from lifelong.cli.tables import METRIC_NAMES, fmt, matrix_table, metrics_table, stream_table
from lifelong.config import RunSettings, load_config, parameters
from lifelong.errors import ConfigError
from lifelong.runner.results import ResultsStore

if TYPE_CHECKING:
    from lifelong.runner.loop import RunResult


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from lifelong.cli.protocol import run_with_seeds
    from lifelong.experiment import prepare, run_config

    if args.resume is not None:
        return resume_run(args, console)
    overrides = list(args.set) + ([f"run.db={json.dumps(args.db)}"] if args.db else []) \
        + ([f"run.seed={args.seed}"] if args.seed is not None else []) \
        + (["run.checkpoint=false"] if args.no_checkpoint else [])
    config = load_config(args.config, overrides)
    prepared = prepare(config)
    store = ResultsStore(config.run.db)
    console.print(stream_table(prepared[0].summary(), prepared[0].name))
    if args.seeds is not None:
        return run_with_seeds(config, args.seeds, store, console)
    result = run_config(config, store=store, progress=config.run.progress, prepared=prepared)
    print_result(result, config.run.db, console)
    return 0


def resume_run(args: argparse.Namespace, console: Console) -> int:
    """``lifelong run --resume ID``: continue a stored run with its stored configuration."""
    from lifelong.experiment import resume

    if args.config or args.set or args.seed is not None or args.seeds is not None or args.no_checkpoint:
        raise ConfigError(f"--resume {args.resume} continues the run's stored configuration; drop --config, "
                          "--set, --seed, --seeds and --no-checkpoint")
    db = args.db or RunSettings().db
    result = resume(ResultsStore(db), args.resume, progress=True)
    print_result(result, db, console)
    return 0


def print_result(result: RunResult, db: str, console: Console) -> None:
    console.print(matrix_table(result.matrix.tolist()))
    console.print(metrics_table(result.metrics, [c.as_dict() for c in result.costs]))
    console.print(f"run {result.run_id} stored in {db}")


def cmd_runs(args: argparse.Namespace, console: Console) -> int:
    table = Table(title=f"runs in {args.db}")
    for column in ("id", "created", "status", "stream", "strategy", "seed", "final_accuracy", "forgetting"):
        table.add_column(column)
    for r in ResultsStore(args.db).runs():
        metrics = r.metrics or {}
        table.add_row(str(r.id), r.created, r.status, r.name, r.strategy, str(r.seed),
                      fmt(metrics.get("final_accuracy")), fmt(metrics.get("forgetting")))
    console.print(table)
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    record = ResultsStore(args.db).get(args.run_id)
    console.print(f"run {record.id}: {record.name}, strategy {record.strategy}, seed {record.seed}, "
                  f"status {record.status}" + (f" ({record.error})" if record.error else ""))
    matrix = record.rows
    if matrix:
        console.print(matrix_table(matrix))
    console.print(metrics_table(record.metrics or {}, [e["cost"] for e in record.experiences]))
    config = Table(title="configuration")
    config.add_column("field")
    config.add_column("value")
    for section, values in record.config.items():
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            config.add_row(f"{section}.{key}".rstrip("."), str(value))
    console.print(config)
    console.print("environment: " + ", ".join(f"{k} {v}" for k, v in record.environment.items()))
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    store = ResultsStore(args.db)
    records = [store.get(run_id) for run_id in args.run_ids]
    table = Table(title="comparison")
    table.add_column("metric")
    for r in records:
        table.add_column(f"run {r.id} ({r.strategy})", justify="right")
    for name in METRIC_NAMES:
        table.add_row(name, *(fmt((r.metrics or {}).get(name)) for r in records))
    table.add_row("train_seconds", *(f"{sum(e['cost']['seconds'] for e in r.experiences):.2f}" for r in records))
    table.add_row("status", *(r.status for r in records))
    console.print(table)
    return 0


def cmd_strategies(args: argparse.Namespace, console: Console) -> int:
    from lifelong.strategies import STRATEGIES

    table = Table(title="strategies")
    table.add_column("name")
    table.add_column("hyperparameters (default)")
    table.add_column("summary")
    for name, cls in STRATEGIES.items():
        params = ", ".join(f"{k}={p.default!r}" for k, p in parameters(cls).items()) or "-"
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        table.add_row(name, params, doc)
    console.print(table)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``run``, ``runs``, ``show``, ``compare`` and ``strategies`` on the CLI's subparsers."""
    run = sub.add_parser("run", help="train a strategy on a stream and store the run")
    run.add_argument("--config", help="TOML file with [dataset], [scenario], [model], [strategy], [optim], [run]")
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
    runs = sub.add_parser("runs", help="list stored runs")
    show = sub.add_parser("show", help="print one stored run")
    show.add_argument("run_id", type=int)
    compare = sub.add_parser("compare", help="put stored runs' metrics side by side")
    compare.add_argument("run_ids", type=int, nargs="+")
    for p, handler in ((runs, cmd_runs), (show, cmd_show), (compare, cmd_compare)):
        p.add_argument("--db", default="lifelong-runs.db", help="results database")
        p.set_defaults(handler=handler)
    strategies = sub.add_parser("strategies", help="list strategies with their hyperparameters")
    strategies.set_defaults(handler=cmd_strategies)
