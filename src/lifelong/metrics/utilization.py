"""Model FLOPs utilization (MFU; Chowdhery et al. 2022, "PaLM", appendix B): the model FLOPs a run
achieves per second over the peak FLOPs per second of its device.

Achieved model FLOPs are what the model needs, not what the hardware did (no recomputation, no
strategy's extra passes):

* a transformer language model (our :class:`~lifelong.models.gpt.GPT`): PaLM's count per trained token,
  ``6 N + 12 L d T`` (:func:`lm_flops_per_token`), with ``N`` the parameters that take part in matrix
  products (every parameter but the position embedding: the token embedding counts, as the tied output
  layer; nanoGPT's ``estimate_mfu`` counts the same), ``L`` layers, ``d`` the model width, ``T`` the
  context: ``6 N`` for the forward and backward passes through the weights, ``12 L d T`` for attention's
  two products (full, not causal, as PaLM counts them);
* any other model: the FLOP meter's count (``optim.count_flops``, :mod:`lifelong.runner.flops`), which
  counts every matrix product of training as it runs; without it the model FLOPs are unknown.

The peak is never guessed: ``run.peak_flops`` gives it in FLOP/s (see :data:`PUBLISHED_PEAKS` for
datasheet figures), or ``"measure"`` times a square matrix product on the run's device at the run's
thread count (:func:`measured_peak`; what a CPU shared with other work really gives, below its
datasheet peak), or it is unset and MFU is reported as n/a.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a function needs it: the tables that show MFU import this module
    import torch
    from torch import nn

PUBLISHED_PEAKS = {
    "NVIDIA A100 (bf16/fp16 dense)": 312e12,
    "NVIDIA H100 SXM (bf16/fp16 dense)": 989e12,
    "NVIDIA H100 PCIe (bf16/fp16 dense)": 756e12,
    "NVIDIA H200 (bf16/fp16 dense)": 989e12,
    "NVIDIA A100 (fp32, no TF32)": 19.5e12,
}
"""Datasheet peaks in FLOP/s, for ``run.peak_flops`` (a float32 run without TF32 reaches the fp32
figure at most). A CPU has no figure here: its peak depends on cores, vector units and clock; measure it
(``run.peak_flops = "measure"``) or give the vendor's."""


def lm_flops_per_token(model: nn.Module) -> float | None:
    """PaLM's model FLOPs per trained token, ``6 N + 12 L d T``, of a module that has ``blocks``,
    ``context``, ``token_embedding`` and ``position_embedding`` (our GPT); None for any other module."""
    from torch import nn

    blocks, context = getattr(model, "blocks", None), getattr(model, "context", None)
    token, position = getattr(model, "token_embedding", None), getattr(model, "position_embedding", None)
    if not isinstance(blocks, nn.ModuleList) or not isinstance(context, int) or not isinstance(token, nn.Embedding) \
            or not isinstance(position, nn.Embedding):
        return None
    matmul_parameters = sum(p.numel() for p in model.parameters()) - position.weight.numel()
    return 6.0 * matmul_parameters + 12.0 * len(blocks) * token.embedding_dim * context


def mfu(model_flops: float, seconds: float, peak_flops: float | None) -> float | None:
    """``model_flops / seconds / peak_flops``; None when any of them is unknown (0 or unset)."""
    if not peak_flops or model_flops <= 0 or seconds <= 0:
        return None
    return model_flops / seconds / peak_flops


def measured_peak(device: torch.device | str = "cpu", dtype: torch.dtype | None = None, size: int = 512,
                  repeats: int = 10) -> float:
    """FLOP/s of a ``size`` x ``size`` matrix product in ``dtype`` (float32 when None) on ``device``
    (``2 size^3`` FLOPs each), the best of ``repeats`` timed products after one warm-up, at torch's
    current thread count."""
    import torch

    device = torch.device(device)
    dtype = torch.float32 if dtype is None else dtype
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, device=device, dtype=dtype, generator=generator) for _ in range(2))
    best = float("inf")
    for repeat in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if repeat:
            best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best
