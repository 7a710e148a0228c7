"""Memory figures of a run: the increase over what was in use when the run started, and the bytes the
strategy keeps, checked on runs that allocate tensors of known size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from lifelong import ER, EWC, Naive, OptimConfig, class_incremental, mlp, train
from lifelong.data.streams import Experience
from lifelong.metrics.compute import MemoryMeter, tensor_bytes
from lifelong.strategies import Strategy
from tests.strategies.catalog import cases, run

MIB = 2**20
OPTIM = OptimConfig(lr=0.05, batch_size=16, epochs=1)


@dataclass
class Hoarder(Naive):
    """Naive fine-tuning that keeps 64 MiB of ones from its first experience on (written, so resident;
    mapped afresh, as :func:`test_meter_reports_the_peak_above_the_start` explains)."""

    kept: torch.Tensor | None = field(default=None, init=False, repr=False)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        if self.kept is None:
            self.kept = torch.ones(16 * MIB)  # 16 Mi float32 values = 64 MiB

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "kept": self.kept}


def test_meter_reports_the_peak_above_the_start() -> None:
    # 64 MiB is above glibc's largest mmap threshold (32 MiB): the block is mapped afresh rather than
    # carved out of freed heap pages that are already resident, so the resident set grows by all of it
    # (less what the process may free meanwhile: 1 MiB of slack)
    meter = MemoryMeter(torch.device("cpu"))
    block = torch.ones(16 * MIB)
    assert meter.increase_mb() >= 63
    del block
    assert meter.increase_mb() >= 63  # a peak: it stays after the tensor is freed
    assert MemoryMeter(torch.device("cpu")).increase_mb() < 16  # a new meter starts from what is in use now


def test_run_reports_its_own_increase_and_the_strategys_bytes(small_data) -> None:
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    hoarding = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(32,)), Hoarder(), OPTIM).costs
    assert [cost.memory_bytes for cost in hoarding] == [64 * MIB, 64 * MIB]
    # 64 MiB of its own (less up to 1 MiB the process may free meanwhile), plus what training a 32-unit MLP
    # on 180 samples adds: far less than 16 MiB
    assert 63 <= hoarding[0].memory_increase_mb < 80
    assert hoarding[1].memory_increase_mb >= hoarding[0].memory_increase_mb  # the run's peak so far
    plain = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(32,)), Naive(), OPTIM).costs
    assert [cost.memory_bytes for cost in plain] == [0, 0]
    assert plain[-1].memory_increase_mb < 16  # not the process's 300+ MiB of torch and test data


def test_strategy_memory_bytes_by_hand(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(32,))
    costs = train(stream, model, ER(buffer_size=200), OPTIM).costs
    # the reservoir's storage is allocated whole at the first offer: 200 rows of x (8 float32 = 32
    # bytes), y (8 bytes) and task (8 bytes)
    assert [cost.memory_bytes for cost in costs] == [200 * 48, 200 * 48]
    strategy = EWC()
    train(stream, model, strategy, OPTIM)
    # the anchor and the Fisher: one float32 per parameter each, (8 * 32 + 32) + (32 * 6 + 6) = 486
    assert strategy.memory_bytes() == 2 * 486 * 4
    assert tensor_bytes({"a": torch.zeros(10), "views": list(torch.zeros(6).split(2))}) == 40 + 24


# Every byte each family keeps across experiences, counted by hand on the contract's tiny runs
# (tests/strategies/catalog.py): 3 experiences of 2 of the 6 Gaussian classes, 8 float32 features, an
# MLP 8 -> 16 -> 6 of P = (8 * 16 + 16) + (16 * 6 + 6) = 246 parameters (984 bytes), memories of 24 samples.
P_BYTES = 246 * 4
ROW = 8 * 4 + 8 + 8
"""A stored sample: its 8 float32 features, its int64 label and its int64 task id."""


@pytest.fixture(scope="module")
def kept() -> dict[str, Strategy]:
    """The strategies after their catalog runs, by name, each run once in the module."""
    return {}


def kept_bytes(kept: dict[str, Strategy], name: str) -> int:
    """``memory_bytes`` of strategy ``name`` after its catalog run."""
    if name not in kept:
        kept[name] = run(cases()[name]).strategy
    return kept[name].memory_bytes()


@pytest.mark.parametrize(("name", "expected"), [
    ("er", 24 * ROW), ("er_ace", 24 * ROW), ("uer", 24 * ROW), ("agem", 24 * ROW), ("replay", 24 * ROW),
    ("der", 24 * (ROW + 6 * 4)), ("derpp", 24 * (ROW + 6 * 4)),  # each row with its 6 float32 logits
    ("gdumb", 24 * ROW + P_BYTES),  # the class-balanced memory and the initial weights it retrains from
])
def test_sample_memories_count_their_rows(kept: dict[str, Strategy], name: str, expected: int) -> None:
    assert kept_bytes(kept, name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("lwf", P_BYTES),  # the teacher: a copy of the model
    # 24 exemplars, the teacher and the 6 class means of the 16 features (float32)
    ("icarl", 24 * ROW + P_BYTES + 6 * 16 * 4),
])
def test_distillation_counts_its_teacher(kept: dict[str, Strategy], name: str, expected: int) -> None:
    assert kept_bytes(kept, name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("ewc", 2 * P_BYTES), ("mas", 2 * P_BYTES),  # the anchor and one importance per weight
    ("l2", P_BYTES),  # the anchor alone: every weight counts one
    ("si", 2 * P_BYTES),  # the path integral, start and previous weights are dropped when an experience ends
])
def test_anchors_count_the_weights_and_their_importance(kept: dict[str, Strategy], name: str, expected: int) -> None:
    assert kept_bytes(kept, name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("ncm", 6 * 8 + 6 * 16 * 8), ("fetril", 6 * 8 + 6 * 16 * 8),  # float64 count and feature sum per class
    # and the sum of outer products (the covariance), and the head before its last alignment (16 x 6 + 6, float32)
    ("slca", 6 * 8 + 6 * 16 * 8 + 6 * 16 * 16 * 8 + (16 * 6 + 6) * 4),
    # the random projection 16 -> 64 (float32), the Gram matrix 64 x 64 and the targets 64 x 6 (float64)
    # and the head solved from them (64 x 6, float32)
    ("ranpac", 16 * 64 * 4 + 64 * 64 * 8 + 64 * 6 * 8 + 64 * 6 * 4),
])
def test_class_statistics_count_what_they_accumulate(kept: dict[str, Strategy], name: str, expected: int) -> None:
    assert kept_bytes(kept, name) == expected


HEAD = (16 * 6 + 6) * 4
"""A task's own head: 16 x 6 weights and 6 biases, float32."""


@pytest.mark.parametrize(("name", "expected"), [
    ("dst", 3 * (16 * 4 + HEAD + 8 * 16)),  # per task: the hidden biases, the head and a one-byte mask per weight
    ("clr", 3 * (HEAD + 2 * 16 * 4)),  # per task: the head and a scale and a shift per hidden unit
    # per task: the batch norm's weight, bias, running mean and variance (16 each) and its int64 step count;
    # the head is shared (train_head=False, the paper's)
    ("bn_only", 3 * (4 * 16 * 4 + 8)),
    # the hypernetwork (4 chunk embeddings of 8; a 16 -> 16 -> 64 MLP), 3 task embeddings of 8 and the generated
    # weights (4 chunks of 64) of the 2 earlier tasks its output regulariser holds to
    ("hypernetwork", (4 * 8 + 16 * 16 + 16 + 16 * 64 + 64 + 3 * 8 + 2 * 4 * 64) * 4),
])
def test_per_task_tensors_count_every_task(kept: dict[str, Strategy], name: str, expected: int) -> None:
    assert kept_bytes(kept, name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("l2p", (4 * 2 * 8 + 4 * 8) * 4),  # a pool of 4 prompts of 2 tokens of the ViT's 8 dimensions, and 4 keys
    # the general prompt (1 layer, key and value, 2 tokens) and one expert prompt and key per experience
    ("dualprompt", (2 * 2 * 8 + 3 * (2 * 2 * 8 + 8)) * 4),
    # per experience, 2 components on each of 2 layers: their prompts (2 tokens), keys and attention vectors
    ("coda_prompt", 3 * (2 * 2 * 2 * 8 + 2 * 2 * 8 + 2 * 2 * 8) * 4),
    ("lora", 0), ("adapter", 0),  # the tuning modules are the model's own
    ("lae", (4 * 16 + 16 * 4) * 4),  # the offline copy of the adapter (16 -> 4 -> 16)
])
def test_prompts_and_tuning_count_what_is_not_the_models(kept: dict[str, Strategy], name: str, expected: int) -> None:
    assert kept_bytes(kept, name) == expected


def test_cumulative_counts_the_samples_it_keeps(kept: dict[str, Strategy]) -> None:
    assert kept_bytes(kept, "cumulative") == kept["cumulative"].memory_size() * ROW
