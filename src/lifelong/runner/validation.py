"""Checks run by :func:`lifelong.runner.loop.train` before any training: does the model fit the stream?

Data checks live with the data (:mod:`lifelong.data.validation`, run when a stream is built); this
module checks what only exists once a model and settings meet the stream.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lifelong.config import PROBE, OptimConfig
from lifelong.data.streams import Stream
from lifelong.errors import ConfigError, DataError
from lifelong.metrics.objectives import LANGUAGE_MODEL, logits_of
from lifelong.models.modes import eval_mode
from lifelong.strategies.base import Strategy

STATEFUL_UPDATES = {"adam": "Adam's moments", "adamw": "Adam's moments", "lamb": "LAMB's moments"}
"""Optimizers whose update is not the current gradient whatever the momentum setting."""


def check_model(model: nn.Module, stream: Stream, device: torch.device) -> None:
    """The model takes the stream's inputs and outputs one logit per class of the stream (a language
    model: one logit per token of the vocabulary at every position of a window)."""
    first = stream[0].train
    sample = next(first.subset(torch.arange(min(2, len(first)))).batches(2)).x.to(device)
    language_model = stream.objective == LANGUAGE_MODEL
    with torch.no_grad(), eval_mode(model):
        try:
            out = logits_of(model(sample[:, :-1] if language_model else sample))
        except (RuntimeError, ValueError, TypeError, IndexError, AttributeError) as error:
            raise DataError(f"the model cannot take inputs of shape {tuple(stream.input_shape)}: {error}") from None
    if language_model:
        expected = (len(sample), stream.input_shape[0] - 1, stream.vocab_size)
        if tuple(out.shape) != expected:
            raise DataError(f"the language model maps windows {tuple(sample[:, :-1].shape)} to logits "
                            f"{tuple(out.shape)}; expected {expected} (one logit per token of the stream's "
                            f"vocabulary of {stream.vocab_size} at every position)")
        return
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != stream.n_classes:
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"the model outputs {shape} per sample but the stream has {stream.n_classes} classes "
                        f"(labels 0..{stream.n_classes - 1}); give the model a head of {stream.n_classes} outputs")


def check_objective(strategy: Strategy, stream: Stream, optim: OptimConfig) -> None:
    """The strategy and the optimization settings are defined for the stream's objective. A language
    model's samples have no label to score or test per sample, so the settings that rank samples by
    their classification loss (the hard-batch sampler), test gradient noise on labelled samples (the norm
    test, the batch-size probe) are refused on a token stream."""
    from lifelong.strategies import STRATEGIES  # the registry imports every strategy; the checks need none

    if stream.objective not in strategy.objectives:
        able = sorted(name for name, cls in STRATEGIES.items() if stream.objective in cls.objectives)
        raise ConfigError(f"strategy {type(strategy).__name__} cannot train a {stream.objective.replace('_', ' ')} "
                          f"stream (it is defined on class labels); use one of: {', '.join(able)}")
    if stream.objective != LANGUAGE_MODEL:
        return
    for field, value, refused in (("sampler", optim.sampler, optim.sampler == "hard_batch"),
                                  ("batch_size_test", optim.batch_size_test, optim.batch_size_test != "none"),
                                  ("batch_size", optim.batch_size, optim.batch_size == PROBE)):
        if refused:
            raise ConfigError(f"optim.{field}={value!r} ranks or tests samples by a classifier's loss and is not "
                              "defined for a language model; leave it at its default")


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

