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
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TextIO

from rich.console import Console

from lifelong.errors import LifelongError

COMMAND_MODULES = {
    "run": "run", "runs": "run", "show": "run", "compare": "run", "strategies": "run", "groups": "run",
    "sweep": "protocol", "tune": "protocol", "budget": "protocol", "report": "protocol", "export": "protocol",
    "scenarios": "scenarios", "models": "scenarios",
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
    """Entry point; returns the exit code (0 success, 2 user error).

    In a ``torchrun`` job only rank 0 prints (the others train silently beside it), a refusal included. A
    refusal before training (a handler sets ``args.training`` once training starts) is the same on every
    rank, so it is printed once and every rank exits with 0: torchrun answers any other exit code of its
    workers with a traceback of its own (``ChildFailedError``) and a report of each rank, which would bury
    the one line that says what to fix. An error during training may be one rank's alone (a file its shard
    reads): that rank exits with 2, so that torchrun stops the ranks waiting for it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser([COMMAND_MODULES[command]] if command in COMMAND_MODULES else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    main_rank = os.environ.get("RANK", "0") == "0"
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    console = Console(width=max(Console().width, 120), quiet=not main_rank)
    try:
        with one_line_warnings(quiet=not main_rank):
            return int(args.handler(args, console))
    except LifelongError as error:
        if main_rank:
            print(f"error: {error}", file=sys.stderr)
        return 0 if under_torchrun and not getattr(args, "training", False) else 2
    except KeyboardInterrupt as interrupt:
        if main_rank:
            print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def one_line_warnings(quiet: bool) -> Iterator[None]:
    """Inside the block, a warning (:func:`warnings.warn`, or a warning the library logs) is one line on
    stderr, ``warning: MESSAGE``, without Python's file, line number and source line; none at all with
    ``quiet`` (the ranks after the first of a torchrun job). Logged records still reach the root logger's
    handlers."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
             line: str | None = None) -> None:
        if not quiet:
            print(f"warning: {message}", file=sys.stderr)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.setLevel(logging.CRITICAL + 1 if quiet else logging.WARNING)
    library = logging.getLogger("lifelong")
    library.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            yield
    finally:
        library.removeHandler(handler)
