"""Per-parameter importance estimates used by the regularisation strategies."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lifelong.data.streams import TensorSet

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


def _summed_per_sample(per_sample_grad: Callable[..., dict[str, torch.Tensor]], total: dict[str, torch.Tensor],
                       reduce: Callable[[torch.Tensor], torch.Tensor], *columns: torch.Tensor) -> None:
    """Add ``reduce(g).sum(0)`` of the per-sample gradients ``g`` (N, *shape) of ``per_sample_grad(*rows)``
    over the rows of ``columns`` (each (N, ...)) to ``total`` (``reduce`` may overwrite ``g``, as
    ``Tensor.square_`` does), in chunks whose per-sample gradients fit
    :data:`CPU_CHUNK_BYTES` on a CPU, :data:`DEVICE_CHUNK_BYTES` elsewhere (one sample at least)."""
    budget = CPU_CHUNK_BYTES if columns[0].device.type == "cpu" else DEVICE_CHUNK_BYTES
    per_sample = sum(t.numel() * t.element_size() for t in total.values())
    chunk = max(1, budget // max(per_sample, 1))
    for begin in range(0, len(columns[0]), chunk):
        grads = per_sample_grad(*(column[begin:begin + chunk] for column in columns))
        while grads:  # each parameter's per-sample gradients are freed once summed, not with the chunk's
            name, g = grads.popitem()
            total[name] += reduce(g).sum(dim=0)


def fisher_diagonal(model: nn.Module, data: TensorSet, class_mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, empirical: bool = False,
                    batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of the model's predictive distribution, averaged over ``data``.

    The default is the Fisher as EWC estimates it (Kirkpatrick et al. 2017): the squared gradient of
    ``log p(y | x)`` for a label ``y`` *sampled from the model's own prediction* (drawn with
    ``generator``), an unbiased one-sample estimate of ``sum_c p(c|x) grad log p(c|x)^2``. With
    ``empirical=True`` the true label is used instead (the "empirical Fisher"), which vanishes on
    samples the model already fits and so underrates what matters (Martens 2020, "New insights and
    perspectives on the natural gradient method").

    Per-sample gradients come from ``torch.func`` (vmap of grad), in chunks of a batch sized for the
    cache on a CPU (:data:`CPU_CHUNK_BYTES`) and for memory elsewhere; labels are drawn a batch of
    ``batch_size`` at a time. The
    model is put in eval mode so normalisation layers use their running statistics. ``class_mask`` (C,)
    restricts the softmax to a task's classes (task-incremental streams).
    """
    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def masked(out: torch.Tensor) -> torch.Tensor:
        if class_mask is None:
            return out
        return out.masked_fill(~class_mask.to(out.device), torch.finfo(out.dtype).min)

    def nll(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = masked(functional_call(model, (p, buffers), (x.unsqueeze(0),)))  # (1, C)
        return -F.log_softmax(out, dim=1)[0].gather(0, y.unsqueeze(0))[0]

    per_sample_grad = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    device = next(iter(params.values())).device
    for batch in data.batches(batch_size):
        x, y = batch.x.to(device), batch.y.to(device)
        if not empirical:  # the labels of a batch are drawn at once, with the strategy's (CPU) generator
            with torch.no_grad():
                probs = F.softmax(masked(model(x)), dim=1)  # (B, C)
            y = torch.multinomial(probs.cpu(), 1, generator=generator).flatten().to(x.device, non_blocking=True)
        _summed_per_sample(lambda xs, ys: per_sample_grad(params, xs, ys), fisher, torch.Tensor.square_, x, y)
    model.train(was_training)
    return {k: v / max(len(data), 1) for k, v in fisher.items()}


def output_sensitivity(model: nn.Module, data: TensorSet, class_mask: torch.Tensor | None = None,
                       batch_size: int = 256) -> dict[str, torch.Tensor]:
    """MAS importance (Aljundi et al., ECCV 2018, "Memory Aware Synapses"): for each parameter, the mean
    over ``data`` of ``|d ||f(x)||_2^2 / d theta|``, how much the squared L2 norm of the output moves when
    the parameter does. It needs no labels; a parameter the output does not depend on scores zero.

    ``class_mask`` (C,) restricts the output to a task's classes. Per-sample gradients come from
    ``torch.func`` as in :func:`fisher_diagonal`; the model is put in eval mode for the call."""
    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def squared_norm(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))[0]  # (C,)
        return (out[class_mask.to(out.device)] if class_mask is not None else out).pow(2).sum()

    per_sample_grad = vmap(grad(squared_norm), in_dims=(None, 0))
    importance = {k: torch.zeros_like(v) for k, v in params.items()}
    device = next(iter(params.values())).device
    for batch in data.batches(batch_size):
        _summed_per_sample(lambda xs: per_sample_grad(params, xs), importance, torch.Tensor.abs_,
                           batch.x.to(device))
    model.train(was_training)
    return {k: v / max(len(data), 1) for k, v in importance.items()}
