"""Memory figures of a run: the increase over what was in use when the run started, and the bytes the
strategy keeps, checked on runs that allocate tensors of known size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lifelong import EWC, ER, Naive, OptimConfig, class_incremental, mlp, train
from lifelong.data.streams import Experience
from lifelong.metrics.compute import MemoryMeter, tensor_bytes

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
