"""Per-parameter importance estimates used by the regularisation strategies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lifelong.data.streams import TensorSet
from lifelong.metrics.objectives import logits_of
from lifelong.models.per_sample import functional_state, summed_per_sample


FISHER_LABELS = ("sampled", "empirical", "weighted")
"""The labels a Fisher estimate differentiates ``log p(y | x)`` at: drawn from the model, the true ones, or the
true ones weighted by ``p(y | x)`` (Mammoth's ``ewc_on``)."""


def fisher_diagonal(model: nn.Module, data: TensorSet, class_mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, labels: str = "sampled",
                    batch_size: int = 256, language_model: bool = False) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of the model's predictive distribution, averaged over ``data``.

    The default is the Fisher as EWC estimates it (Kirkpatrick et al. 2017): the squared gradient of
    ``log p(y | x)`` for a label ``y`` *sampled from the model's own prediction* (``labels="sampled"``,
    drawn with ``generator``), an unbiased one-sample estimate of ``sum_c p(c|x) grad log p(c|x)^2``. With
    ``labels="empirical"`` the true label is used instead (the "empirical Fisher"), which vanishes on
    samples the model already fits and so underrates what matters (Martens 2020, "New insights and
    perspectives on the natural gradient method"). ``labels="weighted"`` is the estimate of DER's reference
    code (Mammoth's ``ewc_on``, Buzzega et al. 2020): the true label's squared gradient times ``p(y | x)``,
    one term of the sum above, which is smaller than the sampled estimate wherever the model is confident
    and wrong; the gradient of ``sqrt(p(y|x)) * log p(y|x)`` (the weight held constant) squares to it.

    Per-sample gradients come from ``torch.func`` (vmap of grad), in chunks of a batch sized for the
    cache on a CPU (:data:`~lifelong.models.per_sample.CPU_CHUNK_BYTES`) and for memory elsewhere;
    labels are drawn a batch of ``batch_size`` at a time. The model is put in eval mode so normalisation
    layers use their running statistics. ``class_mask`` (C,) restricts the softmax to a task's classes
    (task-incremental streams).

    ``language_model``: ``data`` holds token windows (N, L + 1) and a sample's log-likelihood is the mean
    over its ``L`` positions of ``log p(y_t | x_<=t)``, each ``y_t`` drawn from the model's prediction at
    that position (or the true next token, ``empirical``): the Fisher of a window, as a causal LM factorises
    its likelihood.
    """
    was_training = model.training
    model.eval()
    params, buffers = functional_state(model)

    def masked(out: torch.Tensor) -> torch.Tensor:
        if class_mask is None:
            return out
        return out.masked_fill(~class_mask.to(out.device), torch.finfo(out.dtype).min)

    if labels not in FISHER_LABELS:
        raise ValueError(f"labels must be one of {list(FISHER_LABELS)}, got {labels!r}")
    if labels == "weighted" and language_model:
        raise ValueError("labels='weighted' weights a classifier's true label by p(y|x); a language model's "
                         "Fisher takes 'sampled' or 'empirical'")

    def nll(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if language_model:  # x (L + 1,), y (L,)
            out = logits_of(functional_call(model, (p, buffers), (x[:-1].unsqueeze(0),)))[0]  # (L, V)
            return -F.log_softmax(out, dim=-1).gather(1, y.unsqueeze(1)).mean()
        out = masked(functional_call(model, (p, buffers), (x.unsqueeze(0),)))  # (1, C)
        return -scale * F.log_softmax(out, dim=1)[0].gather(0, y.unsqueeze(0))[0]

    def predictive(x: torch.Tensor) -> torch.Tensor:
        """The model's predictive distribution of each label to draw: (B, C), or (B * L, V) per token."""
        if language_model:
            return F.softmax(logits_of(model(x[:, :-1])).flatten(0, 1), dim=-1)
        return F.softmax(masked(model(x)), dim=1)

    per_sample_grad = vmap(grad(nll), in_dims=(None, 0, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    device = next(iter(params.values())).device
    for batch in data.batches(batch_size):
        x = batch.x.to(device)
        y = x[:, 1:] if language_model else batch.y.to(device)
        scale = torch.ones(len(x), device=device)
        if labels == "sampled":  # the labels of a batch are drawn at once, with the strategy's (CPU) generator
            with torch.no_grad():
                probs = predictive(x)
            drawn = torch.multinomial(probs.cpu(), 1, generator=generator).to(x.device, non_blocking=True)
            y = drawn.view(y.shape)
        elif labels == "weighted":
            with torch.no_grad():
                scale = predictive(x).gather(1, y.unsqueeze(1))[:, 0].sqrt()
        summed_per_sample(lambda xs, ys, ss: per_sample_grad(params, xs, ys, ss), params,
                          lambda name, g: fisher[name].add_(g.square_().sum(dim=0)), x, y, scale)
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
    params, buffers = functional_state(model)

    def squared_norm(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))[0]  # (C,)
        return (out[class_mask.to(out.device)] if class_mask is not None else out).pow(2).sum()

    per_sample_grad = vmap(grad(squared_norm), in_dims=(None, 0))
    importance = {k: torch.zeros_like(v) for k, v in params.items()}
    device = next(iter(params.values())).device
    for batch in data.batches(batch_size):
        summed_per_sample(lambda xs: per_sample_grad(params, xs), params,
                          lambda name, g: importance[name].add_(g.abs_().sum(dim=0)), batch.x.to(device))
    model.train(was_training)
    return {k: v / max(len(data), 1) for k, v in importance.items()}
