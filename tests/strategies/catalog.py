"""One tiny run of every registered strategy, for the contract and golden tests.

Every entry of :data:`lifelong.strategies.STRATEGIES` gets a case: the stream it is defined on, a model it
can train and small settings that keep a run under a second. A strategy registered later without a case
of its own runs the default case (class-incremental Gaussian data, an MLP, its default settings), so the
contract covers it the day it is added. Text cases train the language-model strategies on two generated
text domains with a one-layer GPT.

``python -m tests.strategies.catalog --write`` records the golden values (:data:`GOLDEN`) of the code in
the working tree: the loss of every step and the final matrix of each case. Run it only where the change
is meant to move a number, and say in the commit which numbers moved and why.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong import OptimConfig, class_incremental, mlp, task_incremental, train
from lifelong.config import AverageConfig
from lifelong.data import Dataset, synthetic
from lifelong.data.augment import Augment
from lifelong.data.streams import Stream
from lifelong.data.text import TextDomain, text_stream
from lifelong.models import vit
from lifelong.models.gpt import gpt
from lifelong.runner.loop import RunResult
from lifelong.runner.observers import Observer, TrainState
from lifelong.strategies import STRATEGIES, Strategy

GOLDEN = Path(__file__).with_name("golden.json")
OPTIM = OptimConfig(lr=0.05, epochs=2, batch_size=16, momentum=0.9)
TEXT_OPTIM = OptimConfig(name="adam", lr=0.01, epochs=1, batch_size=8)


def gaussian() -> Dataset:
    """Six well-separated Gaussian classes in 8 dimensions (the ``small_data`` fixture's data)."""
    return synthetic(n_classes=6, n_features=8, n_per_class=40, spread=0.5, seed=0)


def images(data: Dataset) -> Dataset:
    """The Gaussian data's 8 features as 2x2x2 images, for a ViT."""
    return dataclasses.replace(data, x_train=data.x_train.view(-1, 2, 2, 2), x_test=data.x_test.view(-1, 2, 2, 2))


def documents(alphabet: str, count: int, seed: int) -> tuple[str, ...]:
    """``count`` documents of words over ``alphabet``, each word a letter repeated one to three times."""
    generator = np.random.default_rng(seed)
    return tuple(" ".join(letter * int(generator.integers(1, 4)) for letter in generator.choice(list(alphabet), 12))
                 for _ in range(count))


def text() -> Stream:
    """Two text domains over different letters, in byte tokens, windows of 16."""
    domains = [TextDomain("abc", documents("abc", 60, 0)), TextDomain("xyz", documents("xyz", 60, 1))]
    return text_stream(domains, context=16, train_tokens=1600, validation_tokens=400, seed=0)


def small_mlp(stream: Stream) -> nn.Module:
    return mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)


def normalized_mlp(stream: Stream) -> nn.Module:
    return mlp(stream.input_shape, stream.n_classes, hidden=(16,), norm="batch", seed=0)


def tiny_vit(stream: Stream) -> nn.Module:
    torch.manual_seed(0)
    return vit(stream.input_shape, stream.n_classes, dim=8, depth=2, heads=2, patch=1)


def tiny_gpt(stream: Stream) -> nn.Module:
    torch.manual_seed(0)
    return gpt(stream.input_shape, stream.n_classes, stream.vocab_size, d_model=32, n_layers=1, n_heads=2)


@dataclass(frozen=True)
class Case:
    """How one strategy is run: its stream, model, settings and optimization."""

    strategy: str
    stream: Callable[[], Stream] = lambda: class_incremental(gaussian(), 3)
    model: Callable[[Stream], nn.Module] = small_mlp
    settings: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=lambda: OPTIM)
    options: Callable[[], dict[str, Any]] = dict
    """Further keyword arguments of :func:`lifelong.train` (made afresh for every run)."""

    def build(self) -> Strategy:
        return STRATEGIES[self.strategy](**self.settings)


def tasks() -> Stream:
    return task_incremental(gaussian(), 3)


def vit_stream() -> Stream:
    return class_incremental(images(gaussian()), 3)


MEMORY = {"buffer_size": 24}
SPECIAL: dict[str, dict[str, Any]] = {
    "er": {"settings": MEMORY}, "er_ace": {"settings": MEMORY}, "der": {"settings": MEMORY},
    "derpp": {"settings": MEMORY}, "uer": {"settings": MEMORY}, "icarl": {"settings": MEMORY},
    "pcr": {"settings": MEMORY}, "hpcr": {"settings": {**MEMORY, "gradient_scale_period": 6}},
    "onpro": {"settings": MEMORY}, "tame": {"settings": {**MEMORY, "window": 4}},
    "view_batch": {"settings": {**MEMORY, "views": 2}},
    "kv_bottleneck": {"settings": {"heads": 4, "keys": 8, "key_dim": 2}},
    "agem": {"settings": {**MEMORY, "reference_batch_size": 16}},
    "gdumb": {"settings": {**MEMORY, "memory_passes": 2}},
    "replay": {"settings": {"buffer_size": 24, "replay_fraction": 0.25}},
    "ncm": {"settings": {"adapt_experiences": 1}}, "slca": {"settings": {"samples_per_class": 16}},
    "ranpac": {"settings": {"projection_dim": 64}},
    "gpm": {"settings": {"samples": 32}}, "cuber": {"settings": {"samples": 32}},
    "dst": {"stream": tasks, "settings": {"update_every": 4}}, "clr": {"stream": tasks},
    "bn_only": {"stream": tasks, "model": normalized_mlp},
    "hypernetwork": {"stream": tasks, "settings": {"hidden": (16,), "chunk_size": 64, "embedding_dim": 8,
                                                   "chunk_embedding_dim": 8}},
    "l2p": {"stream": vit_stream, "model": tiny_vit, "settings": {"pool_size": 4, "prompt_length": 2, "top": 2}},
    "dualprompt": {"stream": vit_stream, "model": tiny_vit,
                   "settings": {"g_layers": (0,), "e_layers": (1,), "g_length": 2, "e_length": 2}},
    "coda_prompt": {"stream": vit_stream, "model": tiny_vit,
                    "settings": {"pool_size": 6, "prompt_length": 2, "layers": (0, 1)}},
}
TEXT_SETTINGS: dict[str, dict[str, Any]] = {"er": MEMORY, "replay": {"buffer_size": 24, "replay_fraction": 0.25}}


def runner_cases() -> dict[str, Case]:
    """The runner's options on ER (or naive where the option is about plain training), one case each
    (``runner/<option>``), so that the loop's arithmetic is pinned as well as the strategies'."""
    er = SPECIAL["er"]["settings"]

    def optim(**changes: Any) -> OptimConfig:
        return OPTIM.model_copy(update=changes)

    return {f"runner/{key}": case for key, case in {
        "flops": Case("er", settings=er, optim=optim(count_flops=True)),
        "flop-budget": Case("er", settings=er, optim=optim(count_flops=True, max_flops=2e5)),
        "max-steps": Case("er", settings=er, optim=optim(max_steps=5)),
        "max-samples": Case("er", settings=er, optim=optim(max_samples=50)),
        "adaptive-batch": Case("naive", optim=optim(batch_size=4, batch_size_test="norm",
                                                    batch_size_test_params={"every_steps": 2, "samples": 4,
                                                                            "max_batch_size": 32})),
        "hard-batch": Case("er", settings=er, optim=optim(sampler="hard_batch", sampler_fraction=0.5)),
        "cosine": Case("er", settings=er, optim=optim(schedule="cosine", schedule_params={"warmup_steps": 2})),
        "wsd": Case("naive", optim=optim(schedule="wsd", schedule_params={"warmup_steps": 2})),
        "infinite": Case("naive", optim=optim(schedule="infinite",
                                              schedule_params={"warmup_steps": 2, "cooldown_steps": 4})),
        "rewarm": Case("naive", optim=optim(schedule="rewarm", schedule_params={"warmup_steps": 2})),
        "clip": Case("er", settings=er, optim=optim(grad_clip=0.1)),
        "adam": Case("er", settings=er, optim=optim(name="adam", lr=0.01, weight_decay=1e-3)),
        "lars": Case("naive", optim=optim(name="lars", lr=0.5)),
        "lamb": Case("naive", optim=optim(name="lamb", lr=0.01)),
        "keep-optimizer": Case("er", settings=er, optim=optim(reset_per_experience=False)),
        "branch": Case("naive", optim=optim(branch_decay=0.5)),
        "probe": Case("naive", optim=optim(batch_size="probe")),
        "curve": Case("er", settings=er, options=lambda: {"eval_every_steps": 3}),
        "ema": Case("er", settings=er, options=lambda: {"average": AverageConfig(method="ema", decay=0.9)}),
        "interpolate": Case("er", settings=er, options=lambda: {"average": AverageConfig(method="interpolate")}),
        "augment": Case("er", settings=er, stream=vit_stream,
                        options=lambda: {"augment": Augment(crop_padding=1, flip=True)}),
    }.items()}


def cases() -> dict[str, Case]:
    """Every registered strategy's case by its name, a text case (``text/<name>``) of every strategy
    that trains language models, and the runner's options (:func:`runner_cases`)."""
    found = {name: Case(name, **SPECIAL.get(name, {})) for name in STRATEGIES}
    for name, cls in STRATEGIES.items():
        if "language_model" in cls.CAPABILITIES.objectives:
            found[f"text/{name}"] = Case(name, stream=text, model=tiny_gpt, settings=TEXT_SETTINGS.get(name, {}),
                                         optim=TEXT_OPTIM)
    return {**found, **runner_cases()}


class Losses(Observer):
    """The loss of every optimizer step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_step(self, state: TrainState) -> None:
        self.values.append(state.loss)


@dataclass
class Ran:
    result: RunResult
    losses: list[float]
    strategy: Strategy
    model: nn.Module
    stream: Stream


def run(case: Case, seed: int = 0) -> Ran:
    """Train the case's strategy on its stream from the case's model, on the CPU."""
    stream = case.stream()
    model = case.model(stream)
    strategy = case.build()
    losses = Losses()
    result = train(stream, model, strategy, case.optim, seed=seed, device="cpu", observers=[losses], **case.options())
    return Ran(result, losses.values, strategy, model, stream)


KEPT_METRICS = ("probed_batch_size", "batch_size_changes", "stability_gap", "effective_lr", "replayed_samples")


def golden(ran: Ran) -> dict[str, Any]:
    """What a case pins: the loss of every step, the final matrix, each experience's steps, samples,
    replayed samples and FLOPs, and the metrics the runner's options produce."""
    result = ran.result
    return {"losses": ran.losses, "matrix": np.asarray(result.matrix).tolist(),
            "costs": [[cost.steps, cost.samples, cost.replayed, cost.flops] for cost in result.costs],
            "metrics": {key: result.metrics[key] for key in KEPT_METRICS if key in result.metrics}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN.name}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    values = {name: golden(run(case)) for name, case in cases().items()}
    text_out = json.dumps(values, indent=1, sort_keys=True)
    if args.write:
        GOLDEN.write_text(text_out + "\n")
    print(f"{len(values)} cases" + (f" written to {GOLDEN}" if args.write else ""))


if __name__ == "__main__":
    main()
