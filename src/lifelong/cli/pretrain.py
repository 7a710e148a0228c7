"""``lifelong pretrain``: train the configured model on a dataset (or some of its classes) and save its
backbone for ``model.weights`` and ``strategy.backbone_path``, or a Hugging Face model as a folder for
``model.path`` (``run.save_pretrained``) (:mod:`lifelong.protocol.pretrain`)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from lifelong.config import load_config
from lifelong.errors import ConfigError

BASE = "base"
"""The ``--classes`` value that takes the classes of the configured scenario's first experience."""


def parse_classes(text: str) -> list[int]:
    """Class ids from ``0-4``, ``0,2,5`` or a mix (``0-2,7``)."""
    classes: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            classes += list(range(int(first), int(last) + 1)) if sep else [int(first)]
        except ValueError:
            raise ConfigError(f"--classes: expected class ids such as 0-4 or 0,2,5 (or {BASE!r}), "
                              f"got {text!r}") from None
    return classes


def cmd_pretrain(args: argparse.Namespace, console: Console) -> int:
    from lifelong.protocol.pretrain import base_classes, pretrain

    overrides = list(args.set) + ([f"run.seed={args.seed}"] if args.seed is not None else [])
    config = load_config(args.config, overrides)
    classes = None if args.classes is None else base_classes(config) if args.classes == BASE \
        else parse_classes(args.classes)
    result = pretrain(config, args.output, classes, args.validation_fraction, progress=config.run.progress)
    console.print(f"pretrained {config.model.name} on {len(result.classes)} classes of {config.dataset.name} "
                  f"({result.train_samples} samples) in {result.seconds:.1f} s: train accuracy "
                  f"{result.train_accuracy:.3f}, validation accuracy {result.validation_accuracy:.3f} "
                  f"({result.validation_samples} held-out training samples)")
    if result.path is not None:
        console.print(f"backbone written to {result.path} (described in {result.sidecar}); use it with "
                      f"--set model.weights={json.dumps(str(result.path))} or strategy.backbone_path", soft_wrap=True)
    if config.run.save_pretrained:
        console.print(f"model written to the folder {config.run.save_pretrained}; use it with --set model.name=hf "
                      f"--set model.path={json.dumps(config.run.save_pretrained)}", soft_wrap=True)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``lifelong pretrain`` on the CLI's sub-command parser."""
    pretrain = sub.add_parser("pretrain", help="train a model on a dataset (or a base session) and save its backbone")
    pretrain.add_argument("--config", help="TOML file with [dataset], [model], [optim], [augment], [run] "
                                           "(and [scenario] for --classes base)")
    pretrain.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                          help="override one field, e.g. --set optim.epochs=3 (repeatable)")
    pretrain.add_argument("--seed", type=int, help="run seed (same as --set run.seed=N)")
    pretrain.add_argument("--classes", metavar="IDS",
                          help=f"train on these classes only, e.g. 0-4 or 0,2,5; {BASE!r}: the classes of the "
                               "scenario's first experience (default: every class)")
    pretrain.add_argument("--validation-fraction", type=float, default=0.1,
                          help="share of the training samples held out to measure accuracy (default 0.1)")
    pretrain.add_argument("--output",
                          help="backbone file to write (.pt, or .safetensors), with a sidecar .json beside it; "
                               "required unless --set run.save_pretrained=FOLDER writes a Hugging Face model")
    pretrain.set_defaults(handler=cmd_pretrain)
