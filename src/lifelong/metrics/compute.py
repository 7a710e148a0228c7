"""The cost of training one experience, and the memory a run uses.

Memory is reported for what it is (:class:`MemoryMeter`): the increase over what was in use when the
run started, not the whole process's peak (a CPU process that imported torch already holds hundreds of
MiB before it trains anything), and beside it the bytes the strategy itself keeps
(:func:`tensor_bytes` of its state).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lifelong.metrics.utilization import mfu


@dataclass
class ExperienceCost:
    """What training one experience took."""

    seconds: float = 0.0
    """Wall time of training (evaluation excluded)."""
    samples: int = 0
    """Training samples processed, replayed samples included in the batch counted once per batch row
    of the new data (the runner counts the batch it drew)."""
    steps: int = 0
    """Optimizer steps."""
    memory_increase_mb: float = 0.0
    """The run's peak memory so far above what was in use when it started, in MiB
    (:meth:`MemoryMeter.increase_mb`): on CUDA the torch allocator's peak, on CPU the process's peak
    resident set. Cumulative over the run: the last experience's value is the run's peak."""
    buffer_size: int = 0
    """Samples the strategy holds in memory after the experience."""
    memory_bytes: int = 0
    """Bytes of the tensors the strategy keeps after the experience beyond the model and the stream
    (replay samples and their logits, exemplars, an earlier model, anchor weights and importances):
    :meth:`~lifelong.strategies.base.Strategy.memory_bytes`."""
    flops: float = 0.0
    """Forward and backward floating-point operations of training: the first step's count
    (``torch.utils.flop_counter.FlopCounterMode``) per drawn sample, times the samples drawn; 0 unless
    ``optim.count_flops`` (or a FLOP budget) is on."""
    replayed: int = 0
    """Samples the strategy replayed from its memory into the experience's training (a language
    model's: windows, each of ``L`` predicted tokens)."""
    skipped: int = 0
    """Samples of the experience a real-time stream (``optim.stream_rate``) let pass untrained while the
    learner was busy, over all ranks: ``samples + skipped`` is every sample the experience's stream brought."""
    online_samples: int = 0
    """Samples a real-time stream's online metric covers (every one it brought; a language model's: their
    predicted tokens), 0 without one."""
    online_metric: float = 0.0
    """Their accuracy (a language model's: mean next-token loss), each batch predicted when it arrived, before
    any training on it (the online accuracy of Cai et al. 2021 and Ghunaim et al. 2023)."""
    tokens: int = 0
    """A language model's predicted tokens trained on (``samples`` windows of ``L`` predicted tokens each, the
    count behind litgpt's and torchtitan's tokens per second); 0 on a classification stream."""
    model_flops: float = 0.0
    """The model FLOPs of training (:mod:`lifelong.metrics.utilization`): a transformer language model's
    ``6 N + 12 L d T`` per token (PaLM, appendix B) times ``tokens``, else the FLOP meter's count
    (``flops``); 0 when neither is known."""
    peak_flops: float = 0.0
    """The peak FLOP/s of the run's devices (``run.peak_flops`` times the data-parallel ranks), 0 when
    unset: then MFU is n/a."""

    @property
    def samples_per_second(self) -> float:
        """Throughput of the experience's training: drawn samples per second of its wall time."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        """A language model's throughput in predicted tokens per second (0 on a classification stream)."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def mfu(self) -> float | None:
        """Model FLOPs utilization: ``model_flops / seconds / peak_flops``; None when any is unknown."""
        return mfu(self.model_flops, self.seconds, self.peak_flops)

    def as_dict(self) -> dict[str, float | None]:
        return {**asdict(self), "samples_per_second": self.samples_per_second,
                "tokens_per_second": self.tokens_per_second, "mfu": self.mfu}


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (Linux), e.g. ``VmRSS`` (resident now), ``VmHWM`` (peak)."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{_STATUS} has no {field}")


def _lifetime_peak_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class MemoryMeter:
    """The memory a run uses above what was in use when the meter was made (at the start of the run,
    once the model and the data are on the device).

    On CUDA: the torch allocator's peak since the start (its peak statistics are reset then), minus
    what it held at the start. On a CPU under Linux: the process's resident-set high-water mark, reset
    at the start (``/proc/self/clear_refs``; it is one per process, so two runs in threads of one
    process share it), minus the resident set at the start. Elsewhere the lifetime peak cannot be
    reset, and the figure is how far the run pushed it above the peak before the run (0 for a run that
    stayed under an earlier peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resettable = False
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.baseline = torch.cuda.memory_allocated(device)
            return
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set
            self.baseline = _status_kib("VmRSS") * 1024
            self.resettable = True
        except OSError:
            self.baseline = _lifetime_peak_bytes()

    def peak_bytes(self) -> int:
        """The peak since the start, in the same terms as the baseline."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return _status_kib("VmHWM") * 1024 if self.resettable else _lifetime_peak_bytes()

    def increase_mb(self) -> float:
        """The peak since the start above the baseline, in MiB."""
        return max(self.peak_bytes() - self.baseline, 0) / 2**20


def tensor_bytes(value: Any, skip: tuple[str, ...] = ()) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or mappings and sequences of them, nested), each
    storage counted once however many views of it there are; entries of mappings under a key in
    ``skip`` are left out."""
    storages: dict[tuple[torch.device, int], int] = {}
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[(item.device, storage.data_ptr())] = storage.nbytes()
        elif isinstance(item, Mapping):
            pending.extend(v for k, v in item.items() if k not in skip)
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return sum(storages.values())
