"""``lifelong probe``: the batch-size and learning-rate probes (:mod:`lifelong.optim.probe`) on the model
and the first experience a ``lifelong run`` with the same configuration would train, before training.
Command wiring, so it lives in the ``cli`` layer; torch is imported when the command is registered (its
help shows :class:`~lifelong.optim.probe.ProbeSettings`' defaults), which only ``lifelong probe`` and the
whole parser (``lifelong --help``, which imports torch for the test-time adaptation methods too) do."""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from lifelong.cli.tables import fmt
from lifelong.config import load_config

if TYPE_CHECKING:
    from lifelong.optim.probe import ProbeResult

SETTINGS = {"samples": (int, "samples whose per-sample gradients give the noise scale"),
            "hessian_samples": (int, "samples whose mean loss the sharpness is measured on"),
            "tol": (float, "relative tolerance of the power iteration"),
            "max_iterations": (int, "cap on the power iterations"),
            "seed": (int, "seed of the samples drawn and of the start vector")}
"""The options of ``lifelong probe`` that set :class:`~lifelong.optim.probe.ProbeSettings` fields, whose
defaults the help shows."""


def ceiling_warning(result: ProbeResult, max_iterations: int) -> str | None:
    """Why the probe's learning-rate ceiling is unknown, or None: the power iteration did not settle, or
    the eigenvalue it found is not positive (the loss curves downwards most, and ``2 / lambda`` bounds
    nothing)."""
    if not result.converged:
        return (f"the power iteration did not converge in {result.iterations} iterations, so lambda_max and the "
                f"learning-rate ceiling are unknown (shown as -); raise --max-iterations (now {max_iterations}) "
                "or --tol")
    if result.max_eigenvalue <= 0:
        return (f"the Hessian eigenvalue of largest magnitude is {result.max_eigenvalue:.3g}: the loss curves "
                "downwards more than upwards, so 2/lambda_max bounds no learning rate (shown as -)")
    return None


def cmd_probe(args: argparse.Namespace, console: Console) -> int:
    from lifelong.experiment import build_model, build_stream, check_settings
    from lifelong.optim.probe import ProbeSettings, probe
    from lifelong.runner.loop import resolve_device

    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    settings = ProbeSettings(**given)  # checked first: a bad option stops before the data is built
    config = load_config(args.config, args.set)
    check_settings(config)
    stream = build_stream(config)
    experience = stream[0]
    model = build_model(config, stream).to(resolve_device(config.run.device))
    result = probe(model, experience.train, settings=settings)
    optim = config.optim
    unknown = ceiling_warning(result, settings.max_iterations)
    if unknown is not None:
        warnings.warn(unknown, UserWarning, stacklevel=1)
    table = Table(title=f"probe of {config.model.name} at initialization on {stream.name}, experience 0 "
                        f"({len(experience.train)} training samples)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in (
            ("tr(Sigma) (per-sample gradient variance)", result.trace_covariance),
            ("|G|^2 (squared mean gradient)", result.squared_gradient_norm),
            ("noise scale B_simple ~ B_crit", result.noise_scale),
            ("recommended batch size", result.batch_size),
            ("configured optim.batch_size", optim.batch_size),
            ("lambda_max (top Hessian eigenvalue)", result.max_eigenvalue if result.converged else "-"),
            ("max stable lr 2/lambda_max (no momentum)", "-" if unknown else result.max_stable_lr),
            (f"max stable lr 2(1+mu)/lambda_max (mu={optim.momentum})",
             "-" if unknown else result.max_stable_lr_with(optim.momentum)),
            ("configured optim.lr", optim.lr),
            ("power iterations" + ("" if result.converged else " (not converged)"), result.iterations),
            ("samples: noise scale / read in all", f"{result.samples} / {result.samples_read}"),
            ("seconds", result.seconds)):
        table.add_row(name, value if isinstance(value, str) else fmt(value))
    console.print(table)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``lifelong probe`` on the CLI's sub-command parser."""
    command = sub.add_parser("probe", help="measure the gradient noise scale and the sharpness on the first "
                                           "experience: a batch size and a learning-rate ceiling")
    command.add_argument("--config", help="TOML file, as for `lifelong run`")
    command.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                         help="override one field, as for `lifelong run` (repeatable)")
    from lifelong.optim.probe import ProbeSettings  # torch: `lifelong probe` needs it to run anyway

    defaults = ProbeSettings()
    for name, (kind, help_) in SETTINGS.items():
        command.add_argument(f"--{name.replace('_', '-')}", type=kind,
                             help=f"{help_} (default: {getattr(defaults, name)})")
    command.set_defaults(handler=cmd_probe)
