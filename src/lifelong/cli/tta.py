"""``lifelong tta``: train a model on clean data, adapt it over a stream of corrupted domains, print the
error per domain and store the run. Command wiring over :mod:`lifelong.tta`, so it lives in the ``cli``
layer."""

from __future__ import annotations

import argparse
import json

import torch

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifelong.config import build, load_config
from lifelong.data.catalog import DATASETS
from lifelong.experiment import MODEL_SKIP
from lifelong.models.nets import MODELS
from lifelong.runner.results import ResultsStore
from lifelong.tta.corruptions import CORRUPTIONS, ORDERS
from lifelong.tta.loop import run_tta
from lifelong.tta.methods import FILTERED, METHODS


def cmd_tta(args: argparse.Namespace, console: Console) -> int:
    overrides = ([] if args.config else ["model.name=cnn"]) + list(args.set) \
        + ([f"run.db={json.dumps(args.db)}"] if args.db else []) \
        + ([f"run.seed={args.seed}"] if args.seed is not None else [])
    config = load_config(args.config, overrides)
    dataset = build("dataset", DATASETS, config.dataset)
    torch.manual_seed(config.run.seed)
    model = build("model", MODELS, config.model, dataset.input_shape, dataset.n_classes, skip=MODEL_SKIP)
    corruptions = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    store = ResultsStore(config.run.db)
    status = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=status, disable=not status.is_terminal) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                source = stage == "source training"
                tasks[stage] = bar.add_task("training the source model" if source else
                                            f"adapting with {stage} (domains)", total=total)
            bar.update(tasks[stage], completed=done)

        results = run_tta(dataset, model, methods, corruptions, args.severity, args.gradual, args.batch_size,
                          config.optim, config.run.seed, store, progress=advance, order=args.order,
                          concentration=args.concentration)
    first = next(iter(results.values()))
    order = args.order + (f" {args.concentration:g}" if args.order == "dirichlet" else "")
    table = Table(title=f"error per domain ({'gradual' if args.gradual else 'abrupt'}, severity {args.severity}, "
                        f"{order} order, batch {args.batch_size})")
    table.add_column("method")
    for name in first.domains:
        table.add_column(name, justify="right")
    table.add_column("mean", justify="right")
    table.add_column("run", justify="right")
    for method, result in results.items():
        table.add_row(method, *(f"{e:.3f}" for e in result.errors), f"{result.mean_error:.3f}", str(result.run_id))
    console.print(table)
    console.print(f"stored in {config.run.db}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``lifelong tta`` on the CLI's sub-command parser."""
    tta = sub.add_parser("tta", help="continual test-time adaptation over corrupted domains")
    tta.add_argument("--method", default="source,bn_adapt,tent",
                     help=f"comma-separated methods among {', '.join(METHODS)}; a gradient method with "
                          f"'{FILTERED}' (e.g. tent{FILTERED}) adapts only on samples that pass the open-set "
                          "filter (default: source,bn_adapt,tent)")
    tta.add_argument("--corruptions", default=",".join(CORRUPTIONS),
                     help=f"comma-separated domains in stream order, among {', '.join(CORRUPTIONS)}")
    tta.add_argument("--severity", type=int, default=5, help="corruption severity 1..5 (default 5)")
    tta.add_argument("--gradual", action="store_true", help="severity ramps 1..S..1 inside each domain")
    tta.add_argument("--batch-size", type=int, default=64, help="test batch size, 1 or more (default 64)")
    tta.add_argument("--order", default="iid",
                     help=f"label order inside each domain: {', '.join(ORDERS)} (label-correlated; default iid)")
    tta.add_argument("--concentration", type=float, default=0.1,
                     help="Dirichlet concentration of --order dirichlet; smaller: more correlated (default 0.1)")
    tta.add_argument("--config", help="TOML file with [dataset], [model], [optim] (source training), [run]")
    tta.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override one field, e.g. --set optim.epochs=10 (repeatable); the model defaults to cnn")
    tta.add_argument("--db", help="results database (default: run.db)")
    tta.add_argument("--seed", type=int, help="seed of source training, corruptions and adaptation")
    tta.set_defaults(handler=cmd_tta)
