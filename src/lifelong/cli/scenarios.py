"""``lifelong scenarios``: the scenario builders with their parameters and defaults, the datasets, the text
presets with the Debian package each reads, and for a given configuration the stream it builds (classes
and sizes per experience); ``lifelong models``: the models, what they read, their parameters and defaults.
Command wiring over :mod:`lifelong.data`, :mod:`lifelong.models` and :mod:`lifelong.experiment`, so it lives
in the ``cli`` layer."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from lifelong.cli.tables import registry_table, stream_table
from lifelong.config import load_config, parameters


def cmd_scenarios(args: argparse.Namespace, console: Console) -> int:
    from lifelong.data.catalog import DATASETS
    from lifelong.data.scenarios import SCENARIOS
    from lifelong.experiment import build_stream

    if args.config is None and not args.set:
        console.print(registry_table("scenarios", SCENARIOS, skip=("dataset",)))
        console.print(registry_table("datasets", DATASETS))
        console.print(text_presets())
        return 0
    stream = build_stream(load_config(args.config, args.set))
    console.print(stream_table(stream.summary(), stream.name))
    return 0


def text_presets() -> Table:
    """The text domains ``dataset.domains`` names (``dataset.name = "text"``): what each holds, the Debian
    package it reads and whether that package is installed here."""
    from lifelong.data.corpora import TEXT_DOMAINS, installed

    table = Table(title="text presets (dataset.name = 'text', dataset.domains = [...]; or folders and files)")
    for column in ("name", "text", "package", "installed"):
        table.add_column(column)
    for name, source in TEXT_DOMAINS.items():
        found = installed(source.package) if source.packaged else source.folder.is_dir()
        table.add_row(name, source.description, source.package if source.packaged else "(this Python's own)",
                      "yes" if found else "unknown" if found is None else f"no: apt-get install -y {source.package}")
    return table


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from lifelong.experiment import MODEL_OWN, MODEL_SKIP
    from lifelong.models.nets import MODEL_SUMMARIES, MODELS

    table = Table(title="models (model.name; every model also takes weights = FILE and freeze = "
                        "'none' | 'backbone' | 'norm-only')")
    for column in ("name", "reads", "parameters (default)", "summary"):
        table.add_column(column)
    for name, factory in MODELS.items():
        params = ", ".join(f"{k}={p.default!r}" for k, p in parameters(factory).items()
                           if k not in (*MODEL_SKIP, *MODEL_OWN)) or "-"
        reads, summary = MODEL_SUMMARIES[name]
        table.add_row(name, reads, params, summary)
    console.print(table)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``lifelong scenarios`` and ``lifelong models`` on the CLI's sub-command parser."""
    scenarios = sub.add_parser("scenarios", help="list scenarios and datasets, or print the stream a config builds")
    scenarios.add_argument("--config", help="TOML file; with it (or --set) print its stream's experiences")
    scenarios.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                           help="override one field, e.g. --set scenario.name=si_blurry (repeatable)")
    scenarios.set_defaults(handler=cmd_scenarios)
    models = sub.add_parser("models", help="list the models with what they read and their parameters")
    models.set_defaults(handler=cmd_models)
