"""Checks run by :func:`lifelong.runner.loop.train` before any training: does the model fit the stream?

Data checks live with the data (:mod:`lifelong.data.validation`, run when a stream is built); this
module checks what only exists once a model and settings meet the stream.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lifelong.config import OptimConfig
from lifelong.data.streams import Stream
from lifelong.errors import ConfigError, DataError
from lifelong.strategies.base import Strategy

STATEFUL_UPDATES = {"adam": "Adam's moments", "adamw": "Adam's moments", "lamb": "LAMB's moments"}
"""Optimizers whose update is not the current gradient whatever the momentum setting."""


def check_model(model: nn.Module, stream: Stream, device: torch.device) -> None:
    """The model takes the stream's inputs and outputs one logit per class of the stream."""
    first = stream[0].train
    sample = next(first.subset(torch.arange(min(2, len(first)))).batches(2)).x.to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        try:
            out = model(sample)
        except (RuntimeError, ValueError, TypeError) as error:
            raise DataError(f"the model cannot take inputs of shape {tuple(stream.input_shape)}: {error}") from None
    model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != stream.n_classes:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"the model outputs {shape} per sample but the stream has {stream.n_classes} classes "
                        f"(labels 0..{stream.n_classes - 1}); give the model a head of {stream.n_classes} outputs")


def check_arguments(model: nn.Module, seed: int, eval_batch_size: int, compile: bool | str) -> None:
    """Arguments of :func:`train` that are plain values rather than validated config fields."""
    if not isinstance(model, nn.Module):
        raise DataError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"run.seed must be an integer in [0, 2**63), got {seed!r}")
    if isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, int) or eval_batch_size < 1:
        raise ConfigError(f"run.eval_batch_size must be an integer >= 1, got {eval_batch_size!r}")
    if isinstance(compile, str):
        from torch._dynamo import list_backends

        if compile not in ("inductor", *list_backends(exclude_tags=())):
            raise ConfigError(f"run.compile: unknown torch.compile backend {compile!r}; use true (inductor) or one "
                              f"of {sorted(list_backends(exclude_tags=()))}")


def warn_about_combination(strategy: Strategy, optim: OptimConfig) -> None:
    """Warn about settings that run but change what a method means: a gradient-projecting method (A-GEM)
    with an optimizer that applies unprojected directions kept from earlier steps."""
    if not strategy.projects_gradients:
        return
    carried = STATEFUL_UPDATES.get(optim.name) or (
        f"momentum {optim.momentum}" if optim.name in ("sgd", "lars") and optim.momentum > 0 else None)
    if carried:
        warnings.warn(f"strategy {type(strategy).__name__} projects each step's gradient, but with "
                      f"optim.name={optim.name!r} the update carries {carried}, which hold directions the "
                      "projection removed; set optim.name='sgd' and optim.momentum=0 for the paper's update",
                      UserWarning, stacklevel=3)


def check_task_ids(strategy: Strategy, stream: Stream) -> None:
    """A strategy that chooses its parameters by task id gets a stream that gives task ids."""
    if strategy.requires_task_ids and not stream.task_aware:
        raise ConfigError(f"strategy {type(strategy).__name__} picks its parameters by each sample's task id, which "
                          f"stream {stream.name!r} does not give at test time (the method has no task inference); "
                          "use scenario task_incremental, or domain_incremental with scenario.task_aware = true")

