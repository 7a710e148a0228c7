"""Every option composes with every other, or refuses the combination in one line.

Hypothesis draws a strategy x scenario (recurring and blurry included) x sampler x schedule and its
horizon x optimizer (SGD, Adam, LARS, LAMB, AdaGradNorm) and its reset x budget x batch-size option x FLOP
counting x precision x clipping x continual evaluation x weight averaging (EMA, interpolation, merging) x
WSD-S decayed branches x data held as tensors or read lazily from a ``Dataset`` (memories keeping samples
or positions) on tiny streams, a language model's token stream among them, trains, and checks the
runner's invariants on every draw:

* every experience ends where its plan's horizon does (executed steps = planned steps, or what the
  budget left), and the stream horizon ends with the run, so a schedule reaches its final value;
* without a measured budget or an adaptive batch size the executed steps and samples are the plan's;
* the learning rate of every parameter group at every step is the base rate at the batch size in use,
  times the schedule at that step's position, times the group's scale from the strategy's plan;
* memories never exceed their size, class statistics hold one entry per class;
* a FLOP budget is not overspent by the steps (the first step always runs);
* a lazy dataset gives the run of the same data as tensors, bit for bit (a seconds budget aside);
* any failure is a one-line :class:`LifelongError`.

The draws are derandomized so that CI runs the same ones; ``LIFELONG_COMBINATIONS=N`` runs N draws
instead of the default (e.g. 2000 before a release).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch.utils.data import TensorDataset

from lifelong import OptimConfig, from_dataset, mlp, synthetic, train
from lifelong.config import AverageConfig
from lifelong.data import class_incremental, domain_incremental, recurring, si_blurry, task_incremental
from lifelong.errors import LifelongError
from lifelong.models import vit
from lifelong.optim.schedules import Position
from lifelong.optim.setup import resolve
from lifelong.strategies import STRATEGIES
from tests.runner.recorder import StepRecorder
from tests.runner.test_language_model import Bigram, token_stream

EXAMPLES = int(os.environ.get("LIFELONG_COMBINATIONS", "120"))

STRATEGY_SETTINGS = {
    "naive": {}, "joint": {}, "cumulative": {}, "er": {"buffer_size": 12}, "replay": {"buffer_size": 12, "replay_fraction": 0.25}, "er_ace": {"buffer_size": 12},
    "der": {"buffer_size": 12}, "derpp": {"buffer_size": 12}, "uer": {"buffer_size": 12},
    "agem": {"buffer_size": 12, "reference_batch_size": 8}, "gdumb": {"buffer_size": 18, "memory_passes": 2},
    "icarl": {"buffer_size": 12}, "ewc": {"lam": 1.0}, "si": {}, "mas": {}, "l2": {}, "lwf": {},
    "ncm": {"adapt_experiences": 1}, "fetril": {"adapt_experiences": 1},
    "slca": {"samples_per_class": 4, "backbone_lr_scale": 0.1},
    "gpm": {"samples": 8}, "cuber": {"samples": 8},
    "dst": {"update_every": 2}, "clr": {}, "bn_only": {},
    "hypernetwork": {"hidden": (8,), "chunk_size": 16, "embedding_dim": 4, "chunk_embedding_dim": 4},
    "l2p": {"pool_size": 4, "prompt_length": 2, "top": 2},
    "dualprompt": {"g_layers": (0,), "e_layers": (1,), "g_length": 2, "e_length": 2},
    "coda_prompt": {"pool_size": 6, "prompt_length": 2, "layers": (0, 1)},
    "lora": {"rank": 2, "alpha": 2.0}, "adapter": {"rank": 2, "alpha": 2.0}, "lae": {"rank": 2, "alpha": 2.0},
    "ranpac": {"projection_dim": 16}, "psrd": {}, "tame": {"buffer_size": 12, "window": 2},
}
PROMPTS = {"l2p", "dualprompt", "coda_prompt"}
"""Prompt methods: with the MLP of the combination test they must refuse in one line; they train a ViT."""
BUFFERS = {"er", "er_ace", "der", "derpp", "uer", "agem", "gdumb", "icarl", "tame"}
KEEPS_POSITIONS = BUFFERS - {"icarl"}

SCHEDULES = [("constant", {}), ("cosine", {"horizon": "experience"}), ("cosine", {"horizon": "stream", "final": 0.1}),
             ("cosine", {"horizon": "stream", "warmup_steps": 3}), ("linear_decay", {"horizon": "experience"}),
             ("wsd", {"horizon": "stream", "decay_fraction": 0.3}), ("step", {"horizon": "stream"}),
             ("infinite", {"cooldown_steps": 4}), ("rewarm", {"warmup_steps": 2})]
BUDGETS = [{}, {"max_steps": 3}, {"max_samples": 40}, {"max_flops": 4e4}, {"max_seconds": 0.02}]
BATCHES = [{"batch_size": 8}, {"batch_size": 16, "base_batch_size": 8, "keep_updates": True},
           {"batch_size": 4, "batch_size_test": "norm",
            "batch_size_test_params": {"every_steps": 2, "samples": 4, "max_batch_size": 32, "theta": 0.3}},
           {"batch_size": "probe"}]
SAMPLERS = [("random", 1.0), ("rs2", 0.5), ("hard_batch", 0.5)]
OPTIMIZERS = [("sgd", 0.9, 0.05), ("sgd", 0.0, 0.05), ("adam", 0.0, 0.01), ("lars", 0.9, 0.5), ("lamb", 0.0, 0.01),
              ("adagradnorm", 0.0, 0.1)]
"""(name, momentum, learning rate)."""
AVERAGES = [None, AverageConfig(method="ema", decay=0.9), AverageConfig(method="interpolate", coefficient=0.5),
            AverageConfig(method="merge")]


@functools.cache
def image_data():
    data = synthetic(n_classes=6, n_features=4, n_per_class=16, spread=0.5, seed=0)
    return dataclasses.replace(data, x_train=data.x_train.view(-1, 1, 2, 2), x_test=data.x_test.view(-1, 1, 2, 2))


@functools.cache
def stream(name: str, lazy: bool = False):
    if name == "text":
        return token_stream()
    data = synthetic(n_classes=6, n_features=4, n_per_class=16, spread=0.5, seed=0)
    if lazy:
        data = from_dataset(TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_test, data.y_test),
                            train_targets=data.y_train, test_targets=data.y_test, name=data.name)
    return {"class": lambda: class_incremental(data, 3), "task": lambda: task_incremental(data, 3),
            "recurring": lambda: recurring(data, n_experiences=4, classes_per_experience=2, alpha=0.5, seed=1),
            "blurry": lambda: si_blurry(data, n_experiences=3, disjoint_ratio=0.4, blurry_ratio=0.3, seed=2),
            "domain": lambda: domain_incremental(data, 3, transform="permutation", seed=3)}[name]()


def model_for(scenario: str) -> torch.nn.Module:
    """The tiny model of a draw: an MLP, or a bigram language model for the token stream."""
    return Bigram() if scenario == "text" else mlp((4,), 6, hidden=(8,))


def check_learning_rates(recorder: StepRecorder, optim: OptimConfig, plans: list[dict], probed: int | None) -> None:
    setup = resolve(optim, probed)
    previous: dict[int, dict] = {s["experience"]: s for s in recorder.starts}
    batch = {s["experience"]: setup.batch_size for s in recorder.starts}
    for record in recorder.steps:
        index = record["experience"]
        before = previous[index]
        position = Position(record["step"] - 1, index, record["experience_step"] - 1, before["experience_steps"],
                            before["total_steps"])
        expected = setup.lr_for(batch[index]) * setup.schedule(position)
        assert abs(record["lr"] - expected) <= 1e-9 * max(1.0, expected), (record, expected)
        scales = plans[index]["lr_scales"] or [1.0] * len(record["group_lrs"])
        assert record["scales"] == scales
        assert all(abs(g - record["lr"] * s) <= 1e-12 for g, s in zip(record["group_lrs"], scales, strict=True))
        previous[index], batch[index] = record, record["batch_size"]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(strategy=st.sampled_from(sorted(STRATEGY_SETTINGS)),
       scenario=st.sampled_from(["class", "task", "recurring", "blurry", "domain", "text"]),
       sampler=st.sampled_from(SAMPLERS), schedule=st.sampled_from(SCHEDULES), reset=st.booleans(),
       budget=st.sampled_from(BUDGETS), batch=st.sampled_from(BATCHES), epochs=st.integers(1, 2),
       optimizer=st.sampled_from(OPTIMIZERS), count_flops=st.booleans(), precision=st.sampled_from(["fp32", "bf16"]),
       grad_clip=st.sampled_from([None, 1.0]), eval_every=st.sampled_from([None, 3]),
       data=st.sampled_from(["tensors", "lazy samples", "lazy positions"]), average=st.sampled_from(AVERAGES),
       branch=st.sampled_from([None, 0.5]))
def test_every_combination_keeps_the_runner_invariants(strategy, scenario, sampler, schedule, reset, budget, batch,
                                                        epochs, optimizer, count_flops, precision, grad_clip,
                                                        eval_every, data, average, branch) -> None:
    optim = OptimConfig(name=optimizer[0], momentum=optimizer[1], lr=optimizer[2], epochs=epochs, sampler=sampler[0],
                        sampler_fraction=sampler[1], schedule=schedule[0], schedule_params=schedule[1],
                        reset_per_experience=reset, count_flops=count_flops, precision=precision,
                        grad_clip=grad_clip, branch_decay=branch, **budget, **batch)
    data = "tensors" if scenario == "text" else data  # a token stream is held in memory
    recorder = StepRecorder()
    torch.manual_seed(0)
    model = model_for(scenario)
    keeps = {"memory_keeps": data.split()[1]} if data != "tensors" and strategy in KEEPS_POSITIONS else {}
    built = STRATEGIES[strategy](**STRATEGY_SETTINGS[strategy], **keeps)
    try:
        result = train(stream(scenario, lazy=data != "tensors"), model, built, optim, seed=0, observers=[recorder],
                       eval_every_steps=eval_every, average=average)
    except LifelongError as error:  # a refused combination says why in one line
        assert "\n" not in str(error), str(error)
        return
    if data != "tensors" and "max_seconds" not in budget:
        torch.manual_seed(0)
        in_memory = train(stream(scenario), model_for(scenario),
                          STRATEGIES[strategy](**STRATEGY_SETTINGS[strategy]), optim, seed=0,
                          eval_every_steps=eval_every, average=average)
        assert (result.matrix == in_memory.matrix).all()
        assert [c.steps for c in result.costs] == [c.steps for c in in_memory.costs]
    plans = result.extra["plan"]
    measured = "max_flops" in budget or "max_seconds" in budget
    adaptive = "batch_size_test" in batch
    for index, (end, cost, plan) in enumerate(zip(recorder.ends, result.costs, plans, strict=True)):
        # a decayed branch's steps and samples are counted in the cost on top of the experience's own
        branched = max(1, round(branch * end["experience_steps"])) if branch and end["experience_steps"] else 0
        trained = cost.steps - branched
        assert end["experience_step"] == end["experience_steps"] == trained, (index, end)
        if not measured and not adaptive:
            assert trained == plan["steps"], (index, plan)
            assert cost.samples == plan["samples"] or branched, (index, plan)
        if not plan["train_size"]:
            assert cost.steps == 0
        if "max_steps" in budget:
            assert trained <= max(budget["max_steps"], 1)
        if "max_samples" in budget and trained > 1 and not branched:
            assert cost.samples <= budget["max_samples"]
        steps = recorder.of(index)
        if "max_flops" in budget and len(steps) > 1:
            assert steps[-1]["flops"] <= budget["max_flops"]
        if count_flops and cost.steps:
            assert cost.flops > 0
    assert recorder.ends[-1]["step"] == recorder.ends[-1]["total_steps"] == sum(e["experience_steps"]
                                                                                for e in recorder.ends)
    if eval_every is not None:  # the curve ends with the matrix's last row, and is summarised
        assert result.extra["curve"][-1]["accuracies"] == result.matrix[-1].tolist()
        assert ("stability_gap" if scenario == "text" else "worst_case_accuracy") in result.metrics
    check_learning_rates(recorder, optim, plans, result.metrics.get("probed_batch_size"))
    if strategy in BUFFERS:
        size = STRATEGY_SETTINGS[strategy]["buffer_size"]
        assert all(s["memory"] <= size for s in recorder.steps) and all(e["memory"] <= size for e in recorder.ends)
    if strategy in ("ncm", "slca", "fetril"):
        classes = built.statistics.classes
        assert classes == sorted(set(classes))
    if strategy == "icarl" and built.memory.exemplars is not None:
        assert int(torch.bincount(built.memory.exemplars.y).max()) <= 12 // len(built.seen_classes)


@pytest.mark.parametrize("strategy", sorted(STRATEGY_SETTINGS))
def test_every_strategy_trains_under_bf16_autocast(strategy) -> None:
    """Mixed precision hands strategies bfloat16 outputs (old-model targets, replayed logits)."""
    torch.manual_seed(0)
    scenario = "task" if STRATEGIES[strategy].CAPABILITIES.task_ids else "class"  # parameter isolation needs task ids
    model = mlp((4,), 6, hidden=(8,), norm="batch" if strategy == "bn_only" else "none")
    data = stream(scenario)
    if strategy in PROMPTS:  # the 4 features as 1x2x2 images for a tiny ViT
        data = class_incremental(image_data(), 3)
        model = vit((1, 2, 2), 6, dim=8, depth=2, heads=2, patch=1)
    result = train(data, model, STRATEGIES[strategy](**STRATEGY_SETTINGS[strategy]),
                   OptimConfig(epochs=1, batch_size=8, precision="bf16", momentum=0.0), seed=0)
    assert result.matrix.shape[1] == 3
