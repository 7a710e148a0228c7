"""FLOPs as each step really costs them, checked by hand on a linear model: a linear layer's forward pass
costs 2·B·in·out FLOPs and its weight gradient as much again (the input needs no gradient), so a
training step on B samples costs 4·B·in·out and a forward-only pass 2·B·in·out."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lifelong import OptimConfig, class_incremental, train
from lifelong.strategies import AGEM, ER, Naive
from tests.runner.recorder import StepRecorder

IN, OUT = 8, 6
STEP = 4 * IN * OUT  # FLOPs of one sample's forward and backward pass
FORWARD = 2 * IN * OUT


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(IN, OUT))


def batches(n: int, batch_size: int, epochs: int) -> list[int]:
    """The batch sizes of ``epochs`` epochs of ``n`` samples."""
    return [min(batch_size, n - begin) for _ in range(epochs) for begin in range(0, n, batch_size)]


def run(stream, strategy, **optim):
    recorder = StepRecorder()
    settings = {"lr": 0.05, "epochs": 2, "batch_size": 16, "count_flops": True, **optim}
    result = train(stream, linear(), strategy, OptimConfig(**settings), seed=0, observers=[recorder])
    return result, recorder


def test_er_charges_its_replayed_samples_from_the_first_step_on(small_data) -> None:
    # Defect 4: FLOPs per sample were measured on the first step, when the memory is still empty, and
    # charged to every sample: experience 0 counted no replay at all.
    stream = class_incremental(small_data, 2)
    result, _ = run(stream, ER(buffer_size=50))
    seen, expected = 0, []
    for experience in stream:
        flops = 0
        for size in batches(len(experience.train), 16, 2):
            replayed = min(size, min(50, seen))  # as many as the new batch holds, from what is stored
            flops += STEP * (size + replayed)
            seen += size
        expected.append(flops)
    assert [c.flops for c in result.costs] == expected


def test_agem_charges_its_reference_gradient(small_data) -> None:
    stream = class_incremental(small_data, 2)
    result, _ = run(stream, AGEM(buffer_size=50, reference_batch_size=32))
    first = sum(batches(len(stream[0].train), 16, 2))
    second = batches(len(stream[1].train), 16, 2)
    # the memory holds experience 0 only (50 samples), the reference batch takes 32 of them
    assert [c.flops for c in result.costs] == [STEP * first, STEP * sum(size + 32 for size in second)]


def test_flops_are_the_same_at_any_batch_size(small_data) -> None:
    stream = class_incremental(small_data, 2)
    small, _ = run(stream, Naive(), batch_size=8)
    large, _ = run(stream, Naive(), batch_size=32)
    assert [c.flops for c in small.costs] == [c.flops for c in large.costs] == \
        [STEP * 2 * len(e.train) for e in stream]


def test_hard_batch_scoring_and_the_norm_test_are_charged(small_data) -> None:
    stream = class_incremental(small_data, 2)
    scored, _ = run(stream, Naive(), sampler="hard_batch", sampler_fraction=0.5)
    for experience, cost in zip(stream, scored.costs, strict=True):
        candidates = len(experience.train) // 16 * 16  # whole batches compete
        kept = math.ceil(0.5 * (len(experience.train) // 16)) * 16
        assert cost.flops == 2 * (FORWARD * candidates + STEP * kept)
    tested, recorder = run(stream, Naive(), epochs=1, batch_size=8, batch_size_test="norm",
                           batch_size_test_params={"every_steps": 2, "samples": 4, "max_batch_size": 8})
    for index, (experience, cost) in enumerate(zip(stream, tested.costs, strict=True)):
        sizes = batches(len(experience.train), 8, 1)
        tests = [size for step, size in enumerate(sizes, start=1) if step % 2 == 0]
        # a test at the cap is skipped: max_batch_size = batch size, so no test runs at all
        assert cost.flops == STEP * sum(sizes)
    grown, _ = run(stream, Naive(), epochs=1, batch_size=8, batch_size_test="norm",
                   batch_size_test_params={"every_steps": 1000, "samples": 4, "max_batch_size": 64})
    assert [c.flops for c in grown.costs] == [STEP * len(e.train) for e in stream]  # no test reached
    assert tests  # the first run would have tested


def test_norm_test_flops_are_per_sample_gradients_plus_the_batch_gradient(small_data) -> None:
    stream = class_incremental(small_data, 2)
    result, recorder = run(stream, Naive(), epochs=1, batch_size=8, batch_size_test="norm",
                           batch_size_test_params={"every_steps": 3, "samples": 4, "max_batch_size": 10_000,
                                                   "theta": 1e-6})
    changes = result.metrics["batch_size_changes"]
    assert changes  # theta tiny: the first test grows the batch
    first = recorder.of(0)
    # the first three steps run at 8; the test after step 3 differentiates 4 samples one by one and the
    # whole batch of 8 once: STEP * (4 + 8) on top of the steps
    assert first[2]["flops"] == pytest.approx(STEP * (3 * 8 + 4 + 8))
