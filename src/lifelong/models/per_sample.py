"""Per-sample gradients of a model, summed over a set in chunks of bounded memory.

One shared machinery for every estimate that reduces per-sample gradients: the Fisher diagonal and
MAS importances of the regularisation strategies (:mod:`lifelong.strategies.parts.importance`) and the
gradient noise scale of the batch-size probe (:mod:`lifelong.optim.probe`). Per-sample gradients come
from ``torch.func`` (``vmap`` of ``grad`` over ``functional_call``), never a Python loop over samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: Per-sample gradients held at once on a CPU, in bytes. Larger chunks are no faster, and the larger a
#: chunk the more of its memory the allocator takes fresh from the system (page faults) instead of
#: reusing the last chunk's: on the digits MLP (85k parameters, 340 kB a sample) one experience's Fisher
#: took 35-41 ms in chunks of 12 samples (4 MiB, ~1,000 page faults) and 50-63 ms in batches of 256
#: (87 MB, 16,000 page faults). Each parameter's per-sample gradients are squared in place and freed as
#: soon as they are summed; holding a whole chunk's until its end made chunks of 24 fault 30,000 times
#: and take 110-150 ms.
CPU_CHUNK_BYTES = 4 * 2**20
#: The same bound on other devices, where it only keeps the memory in check: per-sample gradients are
#: one copy of the model per sample (a batch of 256 of an 11M-parameter ResNet-18 would be 11 GiB).
DEVICE_CHUNK_BYTES = 2**30
#: The fewest samples in a chunk, whatever the model's size: each ``vmap`` call has a fixed cost, which
#: dominates small chunks of a conv net. The reduced ResNet-18 (nf 8, 176k parameters, 705 kB a sample)
#: fits 5 samples in 4 MiB, and its Fisher took 2.05 s for 64 Fashion-MNIST images in such chunks against
#: 0.26 s in chunks of 47 (one CPU thread; a training step of 32 images takes 0.04 s).
MIN_CHUNK_ROWS = 32


def functional_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's trainable parameters and its buffers, detached, by name: the arguments of
    ``torch.func.functional_call``."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    return params, buffers


def summed_per_sample(per_sample_grad: Callable[..., dict[str, torch.Tensor]], params: dict[str, torch.Tensor],
                      add: Callable[[str, torch.Tensor], None], *columns: torch.Tensor) -> None:
    """Call ``add(name, g)`` with each parameter's per-sample gradients ``g`` (n, *shape) of
    ``per_sample_grad(*rows)`` over the rows of ``columns`` (each (N, ...)), a chunk of rows at a time;
    ``add`` sums what it needs out of ``g``, and may overwrite it (``g.square_()``) where every sample's
    gradient depends on the sample: ``vmap`` returns one that does not as a broadcast view, which cannot
    be written. A chunk's per-sample gradients of the model's ``params`` fit :data:`CPU_CHUNK_BYTES` on a
    CPU, :data:`DEVICE_CHUNK_BYTES` elsewhere (:data:`MIN_CHUNK_ROWS` samples at least), and each parameter's are freed once
    added, not with the chunk's."""
    budget = CPU_CHUNK_BYTES if columns[0].device.type == "cpu" else DEVICE_CHUNK_BYTES
    per_sample = sum(t.numel() * t.element_size() for t in params.values())
    chunk = max(MIN_CHUNK_ROWS, budget // max(per_sample, 1))
    for begin in range(0, len(columns[0]), chunk):
        grads = per_sample_grad(*(column[begin:begin + chunk] for column in columns))
        while grads:
            add(*grads.popitem())
