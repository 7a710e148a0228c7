"""The protocol subcommands of the ``lifelong`` command line: ``run --seeds``, ``sweep``, ``tune``,
``budget``, ``report`` and ``export``. Each handler parses nothing itself: it calls the module that does the work
and prints what came back; :func:`add_commands` registers them on the CLI's parser. Modules that pull
in Optuna, matplotlib, scipy or torch are imported inside the handlers that need them, so that every
other command starts without paying for those imports. Command wiring over :mod:`lifelong.protocol` and
:mod:`lifelong.report`, so it lives in the ``cli`` layer, above both."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lifelong.cli.interrupts import continue_with
from lifelong.cli.tables import METRIC_NAMES, headline
from lifelong.config import RunConfig, load_config
from lifelong.errors import ConfigError
from lifelong.runner.results import ResultsStore


def run_with_seeds(config: RunConfig, seeds: list[int], store: ResultsStore, console: Console,
                   stream: Table | None = None) -> int:
    """``lifelong run --seeds 0,1,2``: one run per seed, then the ``stream`` table (printed once the runs
    are done, so that a refused setting prints nothing else), each run's result and the aggregate table."""
    from lifelong.protocol.seeds import run_seeds, summary_table

    result = run_seeds(config, seeds, store=store, progress=config.run.progress)
    if stream is not None:
        console.print(stream)
    for run in result.runs:
        final = headline(run.metrics)[0]
        console.print(f"run {run.run_id} (seed {run.config['run']['seed']}): {final} {run.metrics[final]:.3f}")
    console.print(summary_table(result.summary, f"{len(result.runs)} seeds"))
    console.print(f"runs {', '.join(str(r.run_id) for r in result.runs)} stored in {config.run.db} "
                  f"as group {result.group_id}")
    return 0


def job_resources(assignments: list[str]) -> dict[str, Any]:
    """``--slurm KEY=VALUE`` (repeatable) as the launcher's job parameters, each value read as JSON when it is."""
    resources: dict[str, Any] = {}
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals or not key:
            raise ConfigError(f"--slurm {assignment!r}: expected KEY=VALUE (a submitit parameter, e.g. "
                              "slurm_partition=gpu or timeout_min=120)")
        try:
            resources[key] = json.loads(value)
        except json.JSONDecodeError:
            resources[key] = value
    return resources


def cmd_sweep(args: argparse.Namespace, console: Console) -> int:
    from lifelong.protocol.sweep import load_sweep, run_sweep, sweep_table

    sweep = load_sweep(args.config, db=args.db)
    db = sweep.cells[0].config.run.db
    resources = job_resources(args.slurm)
    rerun = f"`lifelong sweep --config {args.config} --db {db}` (it skips the cells already finished)"
    with continue_with(lambda run_id: rerun):
        group_id, outcomes = run_sweep(sweep, ResultsStore(db), console=Console(stderr=True), launcher=args.launcher,
                                       folder=Path(args.jobs_folder) if args.jobs_folder else None,
                                       resources=resources, address=args.address)
    console.print(sweep_table(outcomes, headline(outcomes[0].metrics) if outcomes else METRIC_NAMES[:3]))
    trained = sum(outcome.trained for outcome in outcomes)
    console.print(f"sweep {sweep.name!r}: {len(outcomes)} cells, {trained} trained now, "
                  f"{len(outcomes) - trained} already in {db}; group {group_id}")
    return 0


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    import optuna

    from lifelong.protocol.seeds import parse_seeds, summary_table
    from lifelong.protocol.tune import ProtocolSettings, run_protocol

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    defaults = ProtocolSettings(study="")
    db = args.db or load_config(args.config, args.set).run.db
    settings = ProtocolSettings(
        study=args.study, trials=args.trials, config=args.config, overrides=args.set,
        tune_overrides=args.tune_set or defaults.tune_overrides,
        eval_overrides=args.eval_set or defaults.eval_overrides,
        eval_seeds=parse_seeds(args.eval_seeds, "--eval-seeds"),
        objective=args.objective, validation_fraction=args.validation_fraction, seed=args.seed, fixed=args.fix,
        trial_seeds=parse_seeds(args.trial_seeds, "--trial-seeds") if args.trial_seeds else None,
        storage=args.storage, launcher=args.launcher, parallel=args.parallel, jobs_folder=args.jobs_folder,
        resources=job_resources(args.slurm), address=args.address)
    rerun = f"the same `lifelong tune` command (--study {args.study} --db {db}): it continues the study"
    with continue_with(lambda run_id: rerun):
        result = run_protocol(settings, ResultsStore(db))
    best = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    console.print(f"tuning: {len(result.tuning_run_ids)} trials completed (runs "
                  f"{', '.join(map(str, result.tuning_run_ids))}), {result.diverged} diverged; "
                  f"best {settings.objective} on validation {result.best_value:.3f} with {best}")
    if result.diverged_evaluation:
        console.print(f"evaluation: the loss diverged with seeds {', '.join(map(str, result.diverged_evaluation))} "
                      f"(left out of the summary): {next(iter(result.diverged_evaluation.values()))}")
    console.print(summary_table(result.evaluation, "evaluation stream, best hyperparameters fixed"))
    console.print(f"evaluation runs {', '.join(map(str, result.evaluation_run_ids))}; "
                  f"protocol group {result.group_id} in {db}")
    return 0


def parse_levels(text: str) -> list[float]:
    """``"0.25,0.5,1,2,4"`` -> ``[0.25, 0.5, 1.0, 2.0, 4.0]`` (``--levels``; the protocol checks the values)."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--levels: expected comma-separated numbers such as 0.25,0.5,1,2,4, got {text!r}") from None


def cmd_budget(args: argparse.Namespace, console: Console) -> int:
    """``lifelong budget``: every strategy at every budget level (:mod:`lifelong.protocol.budget`), then
    the comparison at equal compute, and its figures with ``-o``/``--png``."""
    from lifelong.cli.tables import budget_table
    from lifelong.protocol.budget import run_budgeted
    from lifelong.protocol.seeds import parse_seeds

    overrides = list(args.set) + ([f"run.db={json.dumps(args.db)}"] if args.db else [])
    config = load_config(args.config, overrides)
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    seeds = parse_seeds(args.seeds, "--seeds")
    store = ResultsStore(config.run.db)
    rerun = f"the same `lifelong budget` command (--name {args.name} --db {config.run.db}): it skips the finished runs"
    with continue_with(lambda run_id: rerun):
        rows = run_budgeted(config, strategies, parse_levels(args.levels), seeds, store, unit=args.unit,
                            reference=args.reference, absolute=args.absolute, name=args.name,
                            console=Console(stderr=True))
    records = [store.get(row.run_id) for row in rows]
    console.print(budget_table(records, f"budget {args.name!r}: final accuracy at equal {args.unit} "
                                        f"(means over {len(seeds)} seed{'s' if len(seeds) > 1 else ''})"))
    trained = sum(row.trained for row in rows)
    console.print(f"budget {args.name!r}: {len(rows)} runs, {trained} trained now, {len(rows) - trained} already in "
                  f"{config.run.db}; group {store.find_group('budget', args.name)}")
    if args.output is not None or args.png is not None:
        from lifelong.report.html import write_report

        written = write_report(records, args.output, args.png, budget_only=True)
        console.print("wrote " + ", ".join(str(path) for path in written))
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from lifelong.report.html import write_report

    if args.output is None and args.png is None:
        raise ConfigError("report: nothing to write; give -o report.html and/or --png DIR")
    if bool(args.run_ids) == (args.group is not None):
        raise ConfigError("report: give run ids (`lifelong runs` lists them) or --group ID (`lifelong groups` lists "
                          "them), not both")
    store = ResultsStore(args.db, read_only=True)
    run_ids = args.run_ids or [member["run_id"] for member in store.group(args.group).members]
    written = write_report([store.get(run_id) for run_id in run_ids], args.output, args.png, args.target,
                           args.budget_only)
    console.print("wrote " + ", ".join(str(path) for path in written))
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from lifelong.report.export import export

    if args.output is not None and Path(args.output).is_dir():
        raise ConfigError(f"-o: {args.output!r} is a directory; give a file name such as runs.csv")
    if args.output is not None and not Path(args.output).parent.is_dir():
        raise ConfigError(f"-o: the folder {str(Path(args.output).parent)!r} does not exist; create it first")
    text = export(ResultsStore(args.db, read_only=True), args.format)
    if args.output is None:
        print(text, end="")
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        console.print(f"wrote {args.output}")
    return 0


def add_launcher_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--launcher``, ``--address``, ``--jobs-folder`` and ``--slurm`` of ``sweep`` and ``tune``."""
    parser.add_argument("--launcher", default="local", choices=("local", "slurm", "submitit-local", "ray"),
                        help=f"where {what} run: here, one after another (default); as a SLURM job array through "
                             "submitit (each job its own store, imported by this process; preempted jobs requeue "
                             "and resume); the same jobs as local processes; or Ray tasks on the cluster at "
                             "--address (retried and resumed when a worker dies)")
    parser.add_argument("--address", help="the Ray cluster's address (default: a local Ray instance for the run)")
    parser.add_argument("--jobs-folder", help="folder of the jobs' logs, stores and checkpoints, on storage every "
                                              "node sees (default: <db>-jobs)")
    parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of the jobs (repeatable): submitit's, e.g. slurm_partition=gpu, "
                             "timeout_min=120, cpus_per_task=4, gpus_per_node=1, or Ray's task options, e.g. "
                             "num_cpus=2, num_gpus=1")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the protocol subcommands on the CLI's subparsers."""
    sweep = sub.add_parser("sweep", help="run a grid over strategies and hyperparameters (resumable)")
    sweep.add_argument("--config", required=True, help="sweep TOML file (see lifelong.protocol.sweep)")
    sweep.add_argument("--db", help="results database (default: the base config's run.db)")
    add_launcher_arguments(sweep, "cells")
    sweep.set_defaults(handler=cmd_sweep)
    tune = sub.add_parser("tune", help="tune-then-evaluate: search hyperparameters with Optuna on a tuning "
                                       "stream, evaluate the best on a separate stream")
    tune.add_argument("--config", help="base run configuration (TOML)")
    tune.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override for both stages (repeatable)")
    tune.add_argument("--tune-set", action="append", metavar="SECTION.FIELD=VALUE",
                      help="override for the tuning stream (default: scenario.shuffle=true scenario.seed=1)")
    tune.add_argument("--eval-set", action="append", metavar="SECTION.FIELD=VALUE",
                      help="override for the evaluation stream (default: scenario.shuffle=true scenario.seed=2)")
    tune.add_argument("--trials", type=int, default=20,
                      help="trials in the study, counting stored ones (default: %(default)s)")
    tune.add_argument("--study", default="tune",
                      help="study name; rerunning with the same name continues it (default: %(default)s)")
    tune.add_argument("--eval-seeds", default="0,1,2", metavar="S1,S2,...",
                      help="seeds of the evaluation runs (default: %(default)s)")
    tune.add_argument("--trial-seeds", default=None, metavar="S1,S2,...",
                      help="seeds of every trial: its score is their mean; a trial diverging with any is pruned "
                           "(default: the configured run.seed)")
    tune.add_argument("--objective", default="final_accuracy",
                      help="metric maximised on the validation split (default: %(default)s)")
    tune.add_argument("--validation-fraction", type=float, default=0.2,
                      help="share of the tuning stream's training data held out to score trials "
                           "(default: %(default)s)")
    tune.add_argument("--seed", type=int, default=0,
                      help="seed of the sampler and of the validation split (default: %(default)s)")
    tune.add_argument("--fix", action="append", default=[], metavar="SECTION.FIELD",
                      help="leave this parameter of the search space at its configured value (repeatable), "
                           "e.g. --fix optim.lr")
    tune.add_argument("--db", help="results database (default: the config's run.db)")
    tune.add_argument("--storage", metavar="journal:PATH|URL",
                      help="keep the Optuna study in Optuna's journal file PATH or a database URL instead of the "
                           "results database, so that several tune workers (on several machines, each with its "
                           "own --db) share one study until it holds --trials finished trials")
    add_launcher_arguments(tune, "trials")
    tune.add_argument("--parallel", type=int, default=2,
                      help="with a launcher: trials asked of the study at a time, run as jobs together "
                           "(default: %(default)s)")
    tune.set_defaults(handler=cmd_tune)
    budget = sub.add_parser("budget", help="compare strategies at equal compute: each at every budget level "
                                           "(resumable)")
    budget.add_argument("--strategies", required=True, metavar="NAME,...",
                        help="strategies to compare, e.g. naive,er,derpp (each with the base config's settings when "
                             "it is the config's strategy, else its defaults)")
    budget.add_argument("--levels", default="0.25,0.5,1,2,4", metavar="L1,L2,...",
                        help="budget levels: multiples of the reference's cost of one epoch of each experience "
                             "(default 0.25,0.5,1,2,4), or amounts per experience with --absolute")
    budget.add_argument("--unit", default="flops", choices=("flops", "seconds", "steps"),
                        help="what a budget counts (default flops)")
    budget.add_argument("--reference", default="naive",
                        help="strategy whose one epoch of each experience is the level 1x (default naive)")
    budget.add_argument("--absolute", action="store_true", help="levels are amounts of the unit per experience")
    budget.add_argument("--seeds", default="0", metavar="S1,S2,...", help="seeds of every cell (default 0)")
    budget.add_argument("--config", help="base run configuration (TOML); it sets no optim.max_* budget of its own")
    budget.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override of the base configuration (repeatable)")
    budget.add_argument("--name", default="budget", help="the group's name; rerunning with the same name continues it")
    budget.add_argument("--db", help="results database (default: the config's run.db)")
    budget.add_argument("-o", "--output", help="also write an HTML report of the comparison")
    budget.add_argument("--png", metavar="DIR", help="also write its figures as DIR/NAME.png")
    budget.set_defaults(handler=cmd_budget)
    report = sub.add_parser("report", help="write an HTML report (and/or PNG plots) on stored runs")
    report.add_argument("run_ids", type=int, nargs="*")
    report.add_argument("--group", type=int, metavar="ID", help="the runs of a group instead (`lifelong groups`)")
    report.add_argument("--budget-only", action="store_true",
                        help="of the figures, only the comparison at equal compute of budgeted runs")
    report.add_argument("-o", "--output", help="HTML file to write (self-contained, images embedded)")
    report.add_argument("--png", metavar="DIR", help="also write each plot as DIR/NAME.png")
    report.add_argument("--target", type=float, default=0.8,
                        help="mean accuracy for time-to-accuracy (default: %(default)s)")
    export = sub.add_parser("export", help="write the whole results store as CSV or JSON")
    export.add_argument("--format", default="csv",
                        help="csv (one row per run) or json (everything) (default: %(default)s)")
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    for parser, handler in ((report, cmd_report), (export, cmd_export)):
        parser.add_argument("--db", default="lifelong-runs.db", help="results database (read, never created)")
        parser.set_defaults(handler=handler)
