"""The test-time adaptation loop, beside the supervised runner: train a source model on clean data,
then stream shifted, unlabeled domains through a :class:`TestTimeMethod`, scoring each prediction
before the method adapts on its batch. Results go to the same :class:`ResultsStore` as training runs,
one "experience" per domain."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lifelong.config import OptimConfig
from lifelong.data.datasets import Dataset
from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.errors import ConfigError
from lifelong.metrics.compute import MemoryMeter
from lifelong.runner.loop import train
from lifelong.runner.results import ResultsStore
from lifelong.strategies.naive import Naive
from lifelong.tta.corruptions import Domain, shifted_stream
from lifelong.tta.methods import TestTimeMethod, build_method


@dataclass
class TTAResult:
    """Error of the online predictions on each domain, in stream order, and their mean."""

    domains: list[str]
    errors: list[float]
    run_id: int | None = None
    seconds: list[float] = field(default_factory=list)

    @property
    def mean_error(self) -> float:
        return sum(self.errors) / len(self.errors)


def check_batch_size(batch_size: int) -> None:
    """Refuse a test batch size below 1."""
    if batch_size < 1:
        raise ConfigError(f"tta.batch_size must be >= 1, got {batch_size}")


def adapt(model: nn.Module, method: TestTimeMethod, domains: Sequence[Domain], batch_size: int = 64,
          seed: int = 0, store: ResultsStore | None = None, config: dict[str, Any] | None = None,
          name: str = "tta", progress: Callable[[int, int], None] | None = None,
          source: TensorSet | None = None) -> TTAResult:
    """Stream ``domains`` in order, in batches of ``batch_size``, through ``method`` set up on ``model``.

    Each batch is predicted before the method adapts on it (the online protocol of Tent and CoTTA);
    the model is never reset between domains (continual adaptation). ``progress(done, total)`` is
    called after each domain. ``source``: the source training data, for methods that need it (``rmt``).
    """
    check_batch_size(batch_size)
    torch.manual_seed(seed)
    method.setup(model, seed, source)
    config = config or {"method": type(method).__name__.lower(), "batch_size": batch_size}
    run_id = store.start_run(name, str(config.get("method", "")), seed, config) if store else None
    result = TTAResult([d.name for d in domains], [], run_id)
    memory = MemoryMeter(next(model.parameters()).device)
    for index, domain in enumerate(domains):
        started, wrong = time.perf_counter(), 0
        for begin in range(0, len(domain.y), batch_size):
            logits = method.step(domain.x[begin:begin + batch_size])  # (B, C)
            wrong += int((logits.argmax(dim=1) != domain.y[begin:begin + batch_size]).sum())
        result.errors.append(wrong / len(domain.y))
        result.seconds.append(time.perf_counter() - started)
        if store and run_id is not None:
            cost = {"seconds": result.seconds[-1], "samples": len(domain.y),
                    "steps": -(-len(domain.y) // batch_size), "memory_increase_mb": memory.increase_mb(),
                    "buffer_size": 0}
            store.record_experience(run_id, index, [1.0 - e for e in result.errors], cost)
        if progress is not None:
            progress(index + 1, len(domains))
    if store and run_id is not None:
        metrics = {"mean_error": result.mean_error, "final_accuracy": 1.0 - result.mean_error,
                   **{f"error {d}": e for d, e in zip(result.domains, result.errors, strict=True)}}
        store.finish_run(run_id, [[1.0 - e for e in result.errors]], metrics)
    return result


def train_source(dataset: Dataset, model: nn.Module, optim: OptimConfig, seed: int = 0) -> nn.Module:
    """Train ``model`` on the clean training set of ``dataset`` (one experience, the supervised runner)."""
    classes = tuple(sorted(set(dataset.y_train.tolist())))
    clean = Experience(TensorSet.of(dataset.x_train, dataset.y_train, 0),
                       TensorSet.of(dataset.x_test, dataset.y_test, 0), classes, 0, name="source")
    train(Stream((clean,), dataset.n_classes, dataset.input_shape, name=f"{dataset.name} source"), model,
          Naive(), optim, seed=seed)
    return model


def run_tta(dataset: Dataset, model: nn.Module, methods: Sequence[str], corruptions: Sequence[str],
            severity: int = 5, gradual: bool = False, batch_size: int = 64, optim: OptimConfig | None = None,
            seed: int = 0, store: ResultsStore | None = None,
            progress: Callable[[str, int, int], None] | None = None, order: str = "iid",
            concentration: float = 0.1) -> dict[str, TTAResult]:
    """Train ``model`` on clean ``dataset`` once, then adapt a copy of it with each of ``methods`` (names
    for :func:`~lifelong.tta.methods.build_method`) over the test set under ``corruptions`` (the same
    corrupted stream, in label ``order``, for every method). ``progress(stage, done, total)`` is called as
    the stages advance: ``"source training"`` (0 of 1, then 1 of 1 once the source model is trained), then
    each method after each of its domains."""
    if not methods:
        raise ConfigError("tta.method must name at least one method, got none")
    built = {name: build_method(name) for name in methods}
    check_batch_size(batch_size)
    domains = shifted_stream(TensorSet.of(dataset.x_test, dataset.y_test, 0), corruptions, severity, gradual, seed,
                             order, concentration)
    optim = optim or OptimConfig(epochs=10)
    if progress is not None:
        progress("source training", 0, 1)
    train_source(dataset, model, optim, seed)
    if progress is not None:
        progress("source training", 1, 1)
    source = TensorSet.of(dataset.x_train, dataset.y_train, 0)
    results = {}
    for method, instance in built.items():
        config = {"dataset": dataset.name, "method": method, "corruptions": list(corruptions),
                  "domains": [domain.name for domain in domains], "severity": severity, "gradual": gradual,
                  "order": order, "concentration": concentration, "batch_size": batch_size,
                  "optim": optim.model_dump()}
        kind = ("gradual" if gradual else "abrupt") + ("" if order == "iid" else f" {order}")
        stream_name = f"{dataset.name} tta {kind} {len(domains)} domains"
        results[method] = adapt(copy.deepcopy(model), instance, domains, batch_size, seed, store, config,
                                stream_name, None if progress is None else
                                lambda done, total, method=method: progress(method, done, total), source)
    return results
