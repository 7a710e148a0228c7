"""Per-parameter importance estimates used by the regularisation strategies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lifelong.data.streams import TensorSet


def fisher_diagonal(model: nn.Module, data: TensorSet, class_mask: torch.Tensor | None = None,
                    empirical: bool = False, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of the model's predictive distribution, averaged over ``data``.

    The default is the Fisher that EWC defines (Kirkpatrick et al. 2017): for each input the squared
    gradient of ``log p(c | x)`` weighted by the model's own ``p(c | x)``, summed over classes c. With
    ``empirical=True`` only the true label's gradient is used (the "empirical Fisher"), which vanishes on
    samples the model already fits and so underrates what matters (Martens 2020, "New insights and
    perspectives on the natural gradient method").

    Per-sample gradients come from ``torch.func`` (vmap of grad) in one pass per batch and class; the
    model is put in eval mode so normalisation layers use their running statistics. ``class_mask``
    (C,) restricts the softmax to a task's classes (task-incremental streams).
    """
    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def log_probs(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        if class_mask is not None:
            out = out.masked_fill(~class_mask.to(out.device), torch.finfo(out.dtype).min)
        return F.log_softmax(out, dim=1)[0]

    def nll(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -log_probs(p, x).gather(0, y.unsqueeze(0))[0]

    per_sample_grad = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    for begin in range(0, len(data), batch_size):
        x, y = data.x[begin:begin + batch_size], data.y[begin:begin + batch_size]
        if empirical:
            weighted = [(y, torch.ones(len(y), device=x.device))]
        else:
            with torch.no_grad():
                probs = vmap(log_probs, in_dims=(None, 0))(params, x).exp()  # (B, C)
            classes = range(probs.shape[1]) if class_mask is None else class_mask.nonzero().flatten().tolist()
            weighted = [(torch.full_like(y, c), probs[:, c]) for c in classes]
        for labels, weight in weighted:
            grads = per_sample_grad(params, x, labels)
            for k, g in grads.items():
                fisher[k] += torch.einsum("b,b...->...", weight, g**2)
    model.train(was_training)
    return {k: v / max(len(data), 1) for k, v in fisher.items()}
