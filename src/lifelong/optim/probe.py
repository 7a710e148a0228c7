"""Batch-size and learning-rate probes: what the loss at the current weights says about the batch size
and the step size to train with, measured before training.

**Batch size: the gradient noise scale** (McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model
of Large-Batch Training"). With ``G`` the true gradient and ``Sigma`` the covariance of the per-sample
gradients, the *simple noise scale* ``B_simple = tr(Sigma) / |G|^2`` is the batch at which the noise of a
mini-batch gradient (``tr(Sigma) / B``) equals its signal (``|G|^2``). Below it, a larger batch buys
nearly proportionally fewer steps; above it, more samples per step are mostly wasted. The paper's
critical batch size, the best trade between steps and samples, is ``B_crit ~ B_noise``, which
``B_simple`` approximates when the Hessian is close to a multiple of the identity (their section 2),
so the probe reports ``B_crit ~ B_simple``. Both are estimated from per-sample gradients of ``n``
samples (``torch.func``, in chunks of bounded memory: :mod:`lifelong.models.per_sample`), with the
unbiased estimators::

    tr(Sigma) ~ S = (sum_i |g_i|^2 - n |g_mean|^2) / (n - 1)       (the sample covariance's trace)
    |G|^2     ~ |g_mean|^2 - S / n                                 (E |g_mean|^2 = |G|^2 + tr(Sigma) / n)

The noise scale grows as training goes on (the gradient shrinks faster than its noise), so a probe at
initialization recommends the batch for the first steps, usually smaller than the best one later (on
the class-incremental benchmark of ``docs/results/batch-scaling.md`` it grew 45-fold within the first
experience and fell back at the next one).

**Learning rate: the sharpness** ``lambda_max``, the top eigenvalue of the Hessian of the training loss,
found by power iteration on Hessian-vector products (the vector-Jacobian product of reverse-mode ``grad``,
from a seeded random start, until the Rayleigh quotient moves by less than ``tol`` relative). Gradient
descent on a quadratic diverges along the top eigenvector when ``lr > 2 / lambda_max``; with heavy-ball
momentum ``mu`` the bound is ``2 (1 + mu) / lambda_max``. Cohen et al. 2021 ("Gradient descent on neural
networks typically occurs at the Edge of Stability") show that full-batch training drives the sharpness
up to about ``2 / lr`` and holds it there: the bound at the start is a ceiling for the initial learning
rate, not a rate the whole run keeps below. :attr:`ProbeResult.max_stable_lr` is the bound without
momentum; :meth:`ProbeResult.max_stable_lr_with` gives it for a momentum.

Both probes see the model as training does, normalized by the statistics of batches of the probed data
(:func:`probe_statistics`), with two differences that make a single sample's gradient defined: dropout is
off, and BatchNorm's statistics are those of the probed samples held fixed rather than recomputed on each
sample's own (a batch of one, which BatchNorm refuses) or differentiated through. The model's running
statistics are restored afterwards, so probing changes nothing in the run. (Evaluation mode instead would
normalize an untrained model with its initial statistics, mean 0 and variance 1: not normalized at all.)
Both use the plain data loss: a strategy's extra terms (replay, distillation, penalties) are not part of
it. The cost is reported as samples read (each through a forward and a backward pass, or a Hessian-vector
product's forward, backward and second backward pass) and seconds; FLOPs are not counted.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vjp, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from lifelong.data.streams import TensorSet
from lifelong.errors import ConfigError
from lifelong.models.per_sample import functional_state, summed_per_sample

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(outputs (B, ...), targets (B, ...)) -> the mean loss over the batch`` (default: cross-entropy)."""

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ProbeSettings:
    """How much the probe reads. ``samples``: samples whose per-sample gradients estimate the noise scale
    (at least 2); ``hessian_samples``: samples whose mean loss the sharpness is measured on; ``tol``: the
    relative change of the eigenvalue estimate at which power iteration stops, ``max_iterations`` its
    cap; ``seed``: the samples drawn and the start vector; ``batch_size``: samples per forward pass."""

    samples: int = 1024
    hessian_samples: int = 512
    tol: float = 1e-3
    max_iterations: int = 100
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        for field, ok, allowed in (("samples", self.samples >= 2, ">= 2"),
                                   ("hessian_samples", self.hessian_samples >= 1, ">= 1"),
                                   ("tol", self.tol > 0, "> 0"),
                                   ("max_iterations", self.max_iterations >= 1, ">= 1"),
                                   ("batch_size", self.batch_size >= 1, ">= 1")):
            if not ok:
                raise ConfigError(f"probe {field} (`lifelong probe --{field.replace('_', '-')}`) must be "
                                  f"{allowed}, got {getattr(self, field)!r}")


@dataclass(frozen=True)
class ProbeResult:
    """What the probe measured, what it recommends, and what it cost."""

    samples: int
    """Samples the noise scale was estimated on."""
    trace_covariance: float
    """Unbiased estimate of ``tr(Sigma)``, the summed variance of the per-sample gradients."""
    squared_gradient_norm: float
    """Unbiased estimate of ``|G|^2`` (can come out <= 0 when the gradient is lost in the noise)."""
    noise_scale: float
    """``B_simple = tr(Sigma) / |G|^2``; infinite when the estimate of ``|G|^2`` is not positive."""
    batch_size: int
    """The recommended batch size: ``B_crit ~ B_simple`` rounded to the nearest power of two (in log
    scale) and clipped to ``[1, samples in the data]``."""
    max_eigenvalue: float
    """``lambda_max``, the top Hessian eigenvalue of the mean loss over ``hessian_samples`` samples."""
    iterations: int
    """Power iterations (Hessian-vector products) run."""
    converged: bool
    """Whether the eigenvalue estimate settled within ``tol`` before ``max_iterations``."""
    samples_read: int
    """Samples passed through the model: the per-sample gradients' plus every Hessian-vector product's."""
    seconds: float

    @property
    def critical_batch_size(self) -> float:
        """``B_crit``, taken as ``B_simple`` (McCandlish et al. 2018, section 2)."""
        return self.noise_scale

    @property
    def max_stable_lr(self) -> float:
        """``2 / lambda_max``: the largest learning rate at which gradient descent without momentum is
        stable on the local quadratic model (infinite when the loss is not curved upwards)."""
        return self.max_stable_lr_with(0.0)

    def max_stable_lr_with(self, momentum: float) -> float:
        """``2 (1 + momentum) / lambda_max``: the same bound for heavy-ball momentum ``momentum``."""
        return stable_step(momentum) / self.max_eigenvalue if self.max_eigenvalue > 0 else math.inf


def stable_step(momentum: float = 0.0, nesterov: bool = False) -> float:
    """The largest ``lr * h`` at which SGD steps a quadratic ``h / 2 * x^2`` without diverging: 2 without
    momentum, ``2 (1 + mu)`` with torch's heavy-ball momentum ``mu`` (``v <- mu v + g``, ``x <- x - lr v``), and
    ``2 (1 + mu) / (1 + 2 mu)`` with Nesterov's (the iteration's characteristic roots leave the unit disc
    at ``lr h`` = these values; e.g. Goh 2017, "Why Momentum Really Works")."""
    return 2 * (1 + momentum) / (1 + 2 * momentum if nesterov else 1)


def probe(model: nn.Module, data: TensorSet, loss: Loss = F.cross_entropy,
          settings: ProbeSettings | None = None) -> ProbeResult:
    """Measure the gradient noise scale and the sharpness of ``loss`` on ``data`` at the model's current
    weights (on their device), and recommend a batch size and a learning-rate ceiling from them (module
    docstring). Each estimate reads its own seeded random subset of ``data``; the model's weights, mode
    and ``.grad`` are left as they were."""
    settings = settings or ProbeSettings()
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(settings.seed)
    noise_set = data.subset(torch.randperm(len(data), generator=generator)[:settings.samples])
    hessian_set = data.subset(torch.randperm(len(data), generator=generator)[:settings.hessian_samples])
    with probe_statistics(model, noise_set, settings.batch_size):
        trace, squared_norm = gradient_noise(model, noise_set, loss, settings.batch_size)
        eigenvalue, iterations, converged = top_hessian_eigenvalue(model, hessian_set, loss, settings, generator)
    noise_scale = trace / squared_norm if squared_norm > 0 else math.inf
    return ProbeResult(samples=len(noise_set), trace_covariance=trace, squared_gradient_norm=squared_norm,
                       noise_scale=noise_scale, batch_size=recommended_batch_size(noise_scale, len(data)),
                       max_eigenvalue=eigenvalue, iterations=iterations, converged=converged,
                       samples_read=len(noise_set) + iterations * len(hessian_set),
                       seconds=time.perf_counter() - started)


@contextlib.contextmanager
def probe_statistics(model: nn.Module, data: TensorSet, batch_size: int) -> Iterator[None]:
    """The model in evaluation mode for the block, with every BatchNorm layer (Ghost BN included)
    normalizing by the statistics that training mode computes on ``data``: the cumulative average
    (``momentum=None``) of its batch statistics over batches of about ``batch_size`` samples (sizes within
    one of each other, so none is a lone sample BatchNorm refuses), each layer seeing its input as the
    layers before it, in training mode, produce it. Afterwards the running statistics, the momentum and the
    mode are what they were, whatever the block raises. Normalizers with their own running-statistics rule
    (:class:`~lifelong.models.norms.BatchChannelNorm`, :class:`~lifelong.models.norms.AdaB2N`) keep theirs."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, [b.clone() for b in m.buffers(recurse=False)]) for m in norms]
    was_training = model.training
    try:
        model.eval()
        if norms:
            for module in norms:
                module.reset_running_stats()
                module.momentum = None
                module.train()
            device = next(model.parameters()).device
            with torch.no_grad():
                for rows in torch.arange(len(data)).tensor_split(max(1, math.ceil(len(data) / batch_size))):
                    model(data.subset(rows).x.to(device))
            for module in norms:
                module.eval()
        yield
    finally:
        for module, (momentum, buffers) in zip(norms, saved, strict=True):
            module.momentum = momentum
            for buffer, value in zip(module.buffers(recurse=False), buffers, strict=True):
                buffer.copy_(value)
        model.train(was_training)


def recommended_batch_size(noise_scale: float, limit: int) -> int:
    """``noise_scale`` rounded to the nearest power of two in log scale (``2^round(log2 B)``), clipped to
    ``[1, limit]``: the noise scale is an order of magnitude, and powers of two are the sizes a user
    compares and hardware runs best."""
    if noise_scale <= 1:
        return 1
    if noise_scale >= limit:
        return limit
    return min(limit, 2 ** round(math.log2(noise_scale)))


def gradient_noise(model: nn.Module, data: TensorSet, loss: Loss, batch_size: int = 256) -> tuple[float, float]:
    """Unbiased estimates of ``(tr(Sigma), |G|^2)`` from the per-sample gradients of ``loss`` over
    ``data`` (at least 2 samples), summed in float64 (module docstring)."""
    params, buffers = functional_state(model)

    def sample_loss(weights: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss(functional_call(model, (weights, buffers), (x.unsqueeze(0),)), y.unsqueeze(0))

    per_sample_grad = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    squares = torch.zeros((), dtype=torch.float64, device=_device(params))

    def add(name: str, g: torch.Tensor) -> None:
        total[name].add_(g.sum(dim=0, dtype=torch.float64))
        squares.add_(g.square().sum(dtype=torch.float64))  # not in place: g may be a broadcast view

    for batch in data.batches(batch_size):
        summed_per_sample(lambda xs, ys: per_sample_grad(params, xs, ys), params, add,
                          batch.x.to(squares.device), batch.y.to(squares.device))
    n = len(data)
    mean_squared = float(sum((t / n).square().sum() for t in total.values()))
    trace = (float(squares) - n * mean_squared) / (n - 1)
    return trace, mean_squared - trace / n


def top_hessian_eigenvalue(model: nn.Module, data: TensorSet, loss: Loss, settings: ProbeSettings,
                           generator: torch.Generator) -> tuple[float, int, bool]:
    """``(lambda, iterations, converged)``: the eigenvalue of largest magnitude of the Hessian of the
    mean of ``loss`` over ``data`` (the top one whenever the loss curves upwards more than it curves
    downwards), by power iteration from a start vector drawn with ``generator``."""
    params, buffers = functional_state(model)
    device = _device(params)
    batches = [(b.x.to(device), b.y.to(device), len(b.y) / len(data)) for b in data.batches(settings.batch_size)]

    def batch_loss(weights: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss(functional_call(model, (weights, buffers), (x,)), y)

    def hessian_vector_product(vector: Params) -> Params:
        """``H v`` as the vector-Jacobian product of the gradient (reverse over reverse; ``H`` is symmetric):
        forward-mode ``jvp`` would load torch's scripted decompositions for it, a second's start-up."""
        product = {k: torch.zeros_like(v) for k, v in params.items()}
        for x, y, weight in batches:
            _, pull_back = vjp(lambda w: grad(batch_loss)(w, x, y), params)
            for name, value in pull_back(vector)[0].items():
                product[name].add_(value, alpha=weight)
        return product

    vector = {k: torch.randn(v.shape, generator=generator, dtype=v.dtype).to(device) for k, v in params.items()}
    vector = _scaled(vector, 1 / math.sqrt(_dot(vector, vector)))
    eigenvalue = 0.0
    for iteration in range(1, settings.max_iterations + 1):
        product = hessian_vector_product(vector)
        estimate, norm = _dot(vector, product), math.sqrt(_dot(product, product))
        if norm == 0:  # the loss is flat in every direction
            return 0.0, iteration, True
        vector = _scaled(product, 1 / norm)
        if abs(estimate - eigenvalue) <= settings.tol * abs(estimate):
            return estimate, iteration, True
        eigenvalue = estimate
    return eigenvalue, settings.max_iterations, False


def _device(params: Params) -> torch.device:
    return next(iter(params.values())).device


def _dot(a: Params, b: Params) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def _scaled(a: Params, factor: float) -> Params:
    return {k: v * factor for k, v in a.items()}
