"""The ``lifelong`` command line: a thin layer over the Python API.

Every user error (unknown strategy, bad value, unknown field, missing file) ends with one line on
stderr naming the field, the value and what is allowed, and exit code 2.

The ``cli`` layer holds all command wiring and sits above every package it drives (experiment,
protocol, report, tta), below only the public facade ``lifelong/__init__.py``: this module builds the
parser and runs a command; each group of subcommands registers itself from its own module
(:mod:`~lifelong.cli.run`, :mod:`~lifelong.cli.protocol`, :mod:`~lifelong.cli.scenarios`,
:mod:`~lifelong.cli.tta`), with the tables they print in :mod:`~lifelong.cli.tables`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from lifelong.cli import protocol, run, scenarios, tta
from lifelong.errors import LifelongError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifelong", description="Continual learning under a compute budget.")
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_commands(sub)
    protocol.add_commands(sub)
    scenarios.add_commands(sub)
    tta.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 2 user error)."""
    parser = build_parser()
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
