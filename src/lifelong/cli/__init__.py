"""The ``lifelong`` command line: a thin layer over the Python API.

Every user error (unknown strategy, bad value, unknown field, missing file) ends with one line on
stderr naming the field, the value and what is allowed, and exit code 2.

The ``cli`` layer holds all command wiring and sits above every package it drives (experiment,
protocol, report, tta), below only the public facade ``lifelong/__init__.py``: this module builds the
parser and runs a command; each group of subcommands registers itself from its own module
(:mod:`~lifelong.cli.run`, :mod:`~lifelong.cli.protocol`, :mod:`~lifelong.cli.scenarios`,
:mod:`~lifelong.cli.tta`, :mod:`~lifelong.cli.probe`,
:mod:`~lifelong.cli.pretrain`), with the tables they print in :mod:`~lifelong.cli.tables`.

Start-up time is part of the interface: a command imports only its own module, and each module
imports torch, scipy, Optuna or matplotlib inside the handlers that need them, so ``lifelong runs``,
``show`` and ``compare`` never import torch and ``lifelong --help`` imports it only to list the
test-time adaptation methods (``benchmarks/startup.py`` measures it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from lifelong.errors import LifelongError

COMMAND_MODULES = {
    "run": "run", "runs": "run", "show": "run", "compare": "run", "strategies": "run", "groups": "run",
    "sweep": "protocol", "tune": "protocol", "budget": "protocol", "report": "protocol", "export": "protocol",
    "scenarios": "scenarios",
    "tta": "tta",
    "probe": "probe",
    "pretrain": "pretrain",
}
"""The module of :mod:`lifelong.cli` that registers each command. A command line naming one of these
builds its parser from that module alone; any other (``--help``, a command missing here) builds the
whole parser, which is slower but gives the same result."""


def version() -> str:
    """The installed versions of lifelong and torch, read from the package metadata (nothing imported)."""
    from importlib import metadata

    found = {}
    for name in ("lifelong", "torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return f"lifelong {found['lifelong']} (torch {found['torch']})"


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the commands that ``modules`` register (default: every command)."""
    parser = argparse.ArgumentParser(prog="lifelong", description="Continual learning under a compute budget.")
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True)
    for module in modules or dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(f"lifelong.cli.{module}").add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 2 user error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser([COMMAND_MODULES[command]] if command in COMMAND_MODULES else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    # in a torchrun job only rank 0 prints (the others train silently beside it)
    console = Console(width=max(Console().width, 120), quiet=os.environ.get("RANK", "0") != "0")
    try:
        return int(args.handler(args, console))
    except LifelongError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        return 130
