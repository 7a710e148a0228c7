"""Checks run by :func:`lifelong.runner.loop.train` before any training: does the model fit the stream?

Data checks live with the data (:mod:`lifelong.data.validation`, run when a stream is built); this
module checks what only exists once a model and settings meet the stream.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from lifelong.config import PROBE, OptimConfig
from lifelong.data.lazy import as_tensor
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError, DataError
from lifelong.metrics.objectives import LANGUAGE_MODEL, logits_of
from lifelong.models.modes import eval_mode
from lifelong.models.norms import begin_experience
from lifelong.runner.checkpoint import random_states_kept
from lifelong.strategies.base import Strategy, StrategyContext

STATEFUL_UPDATES = {"adam": "Adam's moments", "adamw": "Adam's moments", "lamb": "LAMB's moments",
                    "adamp": "AdamP's moments"}
"""Optimizers whose update is not the current gradient whatever the momentum setting."""


def check_model(model: nn.Module, stream: Stream, device: torch.device) -> None:
    """The model takes the stream's inputs and outputs one logit per class of the stream (a language
    model: one logit per token of the vocabulary at every position of a window)."""
    if stream.document_end is not None and getattr(model, "document_end", None) != stream.document_end:
        raise ConfigError(f"the stream keeps attention within documents (dataset.pack_across_documents=false, "
                          f"end-of-document id {stream.document_end}) and {type(model).__name__} does not mask it so; "
                          "build the model with lifelong.models.gpt.mask_documents(model, stream.document_end) or "
                          "use a stream whose attention crosses documents")
    first = stream[0].train
    sample = next(first.subset(torch.arange(min(2, len(first)))).batches(2)).x.to(device)
    language_model = stream.objective == LANGUAGE_MODEL
    if language_model:  # the second window: the one holding the stream's largest token id, which the model must read
        sample = torch.cat([sample[:1], _highest_window(stream).to(device)])
    with torch.no_grad(), eval_mode(model):
        try:
            out = logits_of(model(sample[:, :-1] if language_model else sample))
        except (RuntimeError, ValueError, TypeError, IndexError, AttributeError) as error:
            if not language_model:
                raise DataError(f"the model cannot take inputs of shape {tuple(stream.input_shape)}: {error}") from None
            if isinstance(error, IndexError):
                raise DataError(f"the model cannot embed the stream's token ids (up to {int(sample.max())}, of a "
                                f"vocabulary of {stream.vocab_size}): {error}; build it with "
                                f"vocab_size={stream.vocab_size}, e.g. lifelong.gpt(stream.input_shape, "
                                "stream.n_classes, vocab_size=stream.vocab_size)") from None
            raise DataError(f"the model cannot read windows of {stream.input_shape[0] - 1} token ids, a text "
                            f"stream's inputs: {error}; use a language model (model.name='gpt', or "
                            "lifelong.causal_lm around one of your own)") from None
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


def _highest_window(stream: Stream) -> torch.Tensor:
    """(1, L + 1) the window of a token stream that holds its largest token id (its windows are in memory)."""
    windows = [as_tensor(part.x) for experience in stream for part in (experience.train, experience.test) if len(part)]
    highest = max(windows, key=lambda x: int(x.max()))  # (N, L + 1)
    return highest[int(highest.max(dim=1).values.argmax())].unsqueeze(0)


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


def check_capabilities(strategy: Strategy, stream: Stream, optim: OptimConfig, *, distributed: bool = False,
                       sharded: bool = False, average: str = "none") -> None:
    """Refuse, before training and in one line each, what the strategy's :class:`Capabilities` exclude:
    the stream's objective, a stream without task ids for a method that picks parameters by task, data-parallel
    training, a sharded model, a weight-averaging method; warn when a gradient-projecting method meets an
    optimizer that carries unprojected directions. The one place the runner reads a strategy's capabilities."""
    from lifelong.strategies import STRATEGIES  # the registry imports every strategy; the checks need none

    capabilities, name = strategy.capabilities, type(strategy).__name__
    if stream.objective not in capabilities.objectives:
        able = sorted(key for key, cls in STRATEGIES.items() if stream.objective in cls.CAPABILITIES.objectives)
        raise ConfigError(f"strategy {name} cannot train a {stream.objective.replace('_', ' ')} "
                          f"stream (it is defined on class labels); use one of: {', '.join(able)}")
    if capabilities.task_ids and not stream.task_aware:
        raise ConfigError(f"strategy {name} picks its parameters by each sample's task id, which "
                          f"stream {stream.name!r} does not give at test time (the method has no task inference); "
                          "use scenario task_incremental, or domain_incremental with scenario.task_aware = true")
    if distributed and not capabilities.distributed:
        raise ConfigError(f"strategy {name!r} cannot run data-parallel yet (its memory or statistics are not "
                          "shared across ranks); run it in one process")
    if sharded and not capabilities.sharding:
        raise ConfigError(f"run.shard='fsdp' cannot run strategy {name!r}: it copies or reads "
                          "whole parameters, which each rank holds a shard of; use run.shard='none' or naive/er")
    if average != "none" and average not in capabilities.averaging:
        allowed = " or ".join(repr(method) for method in ("none", *sorted(capabilities.averaging)))
        raise ConfigError(f"average.method={average!r} cannot be used with strategy {name}, which "
                          f"{capabilities.averaging_refusal}; use average.method={allowed}")
    if stream.objective == LANGUAGE_MODEL:
        for field, value, refused in (("sampler", optim.sampler, optim.sampler == "hard_batch"),
                                      ("batch_size_test", optim.batch_size_test, optim.batch_size_test != "none"),
                                      ("batch_size", optim.batch_size, optim.batch_size == PROBE)):
            if refused:
                raise ConfigError(f"optim.{field}={value!r} ranks or tests samples by a classifier's loss and is "
                                  "not defined for a language model; leave it at its default")
    carried = STATEFUL_UPDATES.get(optim.name) or (
        f"momentum {optim.momentum}" if optim.name in ("sgd", "lars", "sgdp", "sgd_hd") and optim.momentum > 0 else None)
    if capabilities.projects_gradients and carried:
        warnings.warn(f"strategy {name} projects each step's gradient, but with "
                      f"optim.name={optim.name!r} the update carries {carried}, which hold directions the "
                      "projection removed; set optim.name='sgd' and optim.momentum=0 for the paper's update",
                      UserWarning, stacklevel=3)


def check_freeze(strategy: Strategy, name: str, mode: str) -> None:
    """Refuse ``model.freeze`` where the strategy's capabilities say freezing contradicts it."""
    capabilities = strategy.capabilities
    if mode != "none" and not capabilities.freeze:
        raise ConfigError(f"model.freeze={mode!r} {capabilities.freeze_refusal.format(name=name)}")


def check_first_experience(model: nn.Module, strategy: Strategy, context: StrategyContext,
                           experiences: Sequence[Experience], cuda: bool) -> None:
    """Rehearse what the runner does before the first step, on a copy of the model and a fresh strategy of
    the same settings set up with the run's context: the first experience's ``before_experience``, its
    training set and the optimizer's parameter groups. A method meets the model first in those hooks, so
    that is where it refuses one it cannot train (a prompt method on a model that is no ViT, prompt layers
    beyond the ViT's depth, LoRA targets that match no layer, a norm-only method on a model without norms,
    a backbone file that does not fit); rehearsed here, before the run is stored, such a refusal leaves
    nothing in the store. The model, the strategy and the global random states are left as they were."""
    trial = dataclasses.replace(strategy) if dataclasses.is_dataclass(strategy) else copy.deepcopy(strategy)
    with random_states_kept(cuda):
        copied = copy.deepcopy(model)
        trial.setup(context)
        first = experiences[0]
        begin_experience(copied, 0)
        trial.before_experience(copied, first)
        if trial.plan(experiences, 0).trains:
            trial.training_set(first)
        trial.parameter_groups(copied)
