"""From a validated :class:`RunConfig` to a finished run: build the stream, model and strategy by
name, train, store. The CLI is a thin layer over :func:`run_config`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lifelong.config import RunConfig, build, resolved
from lifelong.data.datasets import DATASETS
from lifelong.data.scenarios import SCENARIOS
from lifelong.data.streams import Stream
from lifelong.models.nets import MODELS
from lifelong.runner.loop import RunResult, train
from lifelong.runner.results import ResultsStore
from lifelong.strategies import STRATEGIES, Strategy


def _scenario_component(config: RunConfig) -> Any:
    """The scenario section, with its seed defaulting to the run's seed."""
    params = config.scenario.params
    if "seed" not in params:
        params["seed"] = config.run.seed
    return type(config.scenario)(name=config.scenario.name, **params)


def build_stream(config: RunConfig) -> Stream:
    """The dataset, split into a stream by the configured scenario."""
    dataset = build("dataset", DATASETS, config.dataset)
    return build("scenario", SCENARIOS, _scenario_component(config), dataset, skip=("dataset",))


def build_model(config: RunConfig, stream: Stream) -> nn.Module:
    """The configured model for the stream's input shape and classes, initialised from the run seed."""
    torch.manual_seed(config.run.seed)
    return build("model", MODELS, config.model, stream.input_shape, stream.n_classes,
                 skip=("input_shape", "n_classes"))


def build_strategy(config: RunConfig) -> Strategy:
    return build("strategy", STRATEGIES, config.strategy)


def resolve_config(config: RunConfig) -> dict[str, Any]:
    """The full configuration with every default filled in, as stored with the run."""
    return {
        "dataset": resolved("dataset", DATASETS, config.dataset),
        "scenario": resolved("scenario", SCENARIOS, _scenario_component(config), skip=("dataset",)),
        "model": resolved("model", MODELS, config.model, skip=("input_shape", "n_classes")),
        "strategy": resolved("strategy", STRATEGIES, config.strategy),
        "optim": config.optim.model_dump(),
        "run": config.run.model_dump(),
    }


def prepare(config: RunConfig) -> tuple[Stream, nn.Module, Strategy]:
    """Build (and so validate) the stream, model and strategy a config names, before any training."""
    stream = build_stream(config)
    strategy = build_strategy(config)
    return stream, build_model(config, stream), strategy


def run_config(config: RunConfig, store: ResultsStore | None = None, progress: bool = False,
               prepared: tuple[Stream, nn.Module, Strategy] | None = None) -> RunResult:
    """Build everything the config names (unless ``prepared``) and train; with a ``store`` the run is
    recorded."""
    stream, model, strategy = prepared or prepare(config)
    return train(stream, model, strategy, config.optim, seed=config.run.seed, device=config.run.device,
                 store=store, config=resolve_config(config), progress=progress,
                 eval_batch_size=config.run.eval_batch_size)
