"""``lifelong scenarios``: the scenario builders with their parameters and defaults, the datasets, and for
a given configuration the stream it builds (classes and sizes per experience)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from lifelong.config import load_config, parameters
from lifelong.data.catalog import DATASETS
from lifelong.data.scenarios import SCENARIOS


def registry_table(title: str, registry: dict, skip: tuple[str, ...] = ()) -> Table:
    """One row per entry: name, keyword arguments with their defaults, first line of the docstring."""
    table = Table(title=title)
    for column in ("name", "parameters (default)", "summary"):
        table.add_column(column)
    for name, factory in registry.items():
        params = ", ".join(f"{k}={'required' if p.default is p.empty else repr(p.default)}"
                           for k, p in parameters(factory).items() if k not in skip) or "-"
        table.add_row(name, params, " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split()))
    return table


def cmd_scenarios(args: argparse.Namespace, console: Console) -> int:
    from lifelong.cli import stream_table  # the CLI module renders streams
    from lifelong.experiment import build_stream

    if args.config is None and not args.set:
        console.print(registry_table("scenarios", SCENARIOS, skip=("dataset",)))
        console.print(registry_table("datasets", DATASETS))
        return 0
    stream = build_stream(load_config(args.config, args.set))
    console.print(stream_table(stream.summary(), stream.name))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``lifelong scenarios`` on the CLI's sub-command parser."""
    scenarios = sub.add_parser("scenarios", help="list scenarios and datasets, or print the stream a config builds")
    scenarios.add_argument("--config", help="TOML file; with it (or --set) print its stream's experiences")
    scenarios.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                           help="override one field, e.g. --set scenario.name=si_blurry (repeatable)")
    scenarios.set_defaults(handler=cmd_scenarios)
