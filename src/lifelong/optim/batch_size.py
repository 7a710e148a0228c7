"""Adaptive batch size by the norm test (Byrd, Chin, Nocedal & Wu 2012, "Sample size selection in
optimization methods for machine learning"; with AdaGrad-type steps in Lau et al. 2024, "AdAdaGrad:
adaptive batch size schemes for adaptive gradient methods").

A mini-batch gradient ``g`` is a good enough descent direction when its variance is small against its
norm: ``Var_i(g_i) / B <= theta^2 ||g||^2``, with ``g_i`` the per-sample gradients. When the test
fails, the gradient is mostly noise and the batch should grow to the size the test asks for,
``B = ceil(Var / (theta^2 ||g||^2))`` (Byrd et al. 2012, eq. 3.9): the smallest batch whose mean
gradient would pass.

``g`` is the gradient of the *whole* batch: the mean over a subset of S per-sample gradients has
``E ||g_S||^2 = ||g||^2 + Var / S``, so a subset of 64 would make any batch above ``64 / theta^2``
(256 at theta = 0.5) pass on noise alone. The variance, whose estimate is unbiased on any random
subset, is taken from at most ``samples`` per-sample gradients (``torch.func``: ``vmap`` of ``grad``,
not a Python loop), which caps memory at ``samples x parameters``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from lifelong.errors import ConfigError, TrainingError
from lifelong.models.per_sample import functional_state

SampleLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(outputs (1, C), targets (1,), task ids (1,)) -> scalar loss`` of one sample."""


def per_sample_gradients(model: nn.Module, loss: SampleLoss, x: torch.Tensor, y: torch.Tensor,
                         task: torch.Tensor) -> torch.Tensor:
    """The gradient of ``loss`` for every sample, flattened over the trainable parameters: (B, P).

    The model is evaluated in evaluation mode (normalization layers use their running statistics: a
    batch of one has no batch statistics) and restored to its mode afterwards.
    """
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params, buffers = functional_state(model)

    def sample_loss(weights: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor,
                    ti: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (weights, buffers), (xi.unsqueeze(0),))
        return loss(out, yi.unsqueeze(0), ti.unsqueeze(0))

    was_training = model.training
    model.eval()
    try:
        gradients = vmap(grad(sample_loss), in_dims=(None, 0, 0, 0))(params, x, y, task)
    finally:
        model.train(was_training)
    return torch.cat([gradients[name].reshape(len(x), -1) for name in names], dim=1)


def norm_test(gradients: torch.Tensor, theta: float, batch_size: int | None = None) -> bool:
    """True when the batch gradient passes the norm test: ``Var / B <= theta^2 ||mean||^2``.

    ``gradients`` (S, P) are per-sample gradients of S >= 2 samples of the batch; ``Var`` is their
    unbiased variance summed over coordinates (trace of the covariance), ``B`` the batch size the mean
    gradient is taken over (default S).
    """
    samples = len(gradients)
    if samples < 2:
        raise ValueError(f"the norm test needs at least 2 per-sample gradients, got {samples}")
    mean = gradients.mean(dim=0)  # (P,)
    variance = float((gradients - mean).square().sum()) / (samples - 1)
    return variance / (batch_size or samples) <= theta ** 2 * float(mean.square().sum())


def batch_gradient(model: nn.Module, loss: SampleLoss, x: torch.Tensor, y: torch.Tensor,
                   task: torch.Tensor) -> torch.Tensor:
    """The gradient of the mean of ``loss`` over the batch, flattened over the trainable parameters (P,),
    in evaluation mode as :func:`per_sample_gradients` (so the two describe the same function) and
    without touching ``.grad``."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params, buffers = functional_state(model)

    def batch_loss(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        out = functional_call(model, (weights, buffers), (x,))
        return loss(out, y, task)

    was_training = model.training
    model.eval()
    try:
        gradient = grad(batch_loss)(params)
    finally:
        model.train(was_training)
    return torch.cat([gradient[name].reshape(-1) for name in names])


def required_batch_size(variance: float, squared_norm: float, theta: float) -> float:
    """The smallest batch size whose mean gradient passes the norm test, ``Var / (theta^2 ||g||^2)``
    (infinite when the gradient is zero)."""
    if squared_norm == 0.0:
        return math.inf
    return variance / (theta ** 2 * squared_norm)


@dataclass(frozen=True)
class AdaptiveBatchSize:
    """Proposes the next batch size from the norm test, every ``every_steps`` optimizer steps.

    ``theta``: tolerance of the test (smaller grows the batch sooner; Byrd et al. use 0.5 to 0.9).
    ``max_batch_size``: the cap. ``samples``: at most this many samples of the batch are differentiated
    one by one for the variance. A failing batch grows to the size the test asks for, never shrinks.
    """

    theta: float = 0.5
    max_batch_size: int = 1024
    every_steps: int = 10
    samples: int = 64

    def __post_init__(self) -> None:
        for field, value, ok, allowed in (("theta", self.theta, self.theta > 0, "> 0"),
                                          ("max_batch_size", self.max_batch_size, self.max_batch_size >= 1, ">= 1"),
                                          ("every_steps", self.every_steps, self.every_steps >= 1, ">= 1"),
                                          ("samples", self.samples, self.samples >= 2, ">= 2")):
            if not ok:
                raise ConfigError(f"optim.batch_size_test_params.{field} must be {allowed}, got {value!r}")

    def due(self, experience_step: int, experience_steps: int) -> bool:
        """Whether the test runs after an experience's step ``experience_step`` (counted from 1) of the
        ``experience_steps`` planned: every ``every_steps`` steps, never after the last."""
        return experience_step % self.every_steps == 0 and experience_step < experience_steps

    def propose(self, model: nn.Module, loss: SampleLoss, x: torch.Tensor, y: torch.Tensor,
                task: torch.Tensor, batch_size: int) -> int:
        """The batch size to use next, given the batch ``x`` (B, ...), ``y`` (B,), ``task`` (B,) just
        trained on at ``batch_size``: ``batch_size`` when the batch passes the norm test, else the size
        the test asks for (at most ``max_batch_size``)."""
        if batch_size >= self.max_batch_size or len(y) < 2:
            return batch_size
        count = min(len(y), self.samples)
        gradients = per_sample_gradients(model, loss, x[:count], y[:count], task[:count])  # (count, P)
        variance = float((gradients - gradients.mean(dim=0)).square().sum()) / (count - 1)
        squared_norm = float(batch_gradient(model, loss, x, y, task).square().sum())
        if not math.isfinite(variance) or not math.isfinite(squared_norm):  # the step just taken diverged
            raise TrainingError("the batch-size norm test met non-finite gradients (the weights diverged); "
                                "lower optim.lr or set optim.grad_clip")
        required = required_batch_size(variance, squared_norm, self.theta)
        if required <= batch_size:
            return batch_size
        return self.max_batch_size if required >= self.max_batch_size else max(batch_size + 1, math.ceil(required))


def epochs_keeping_updates(epochs: float, done: float, batch_size: int, proposed: int) -> float:
    """The epochs planned once the batch grows from ``batch_size`` to ``proposed`` after ``done`` of
    ``epochs`` planned epochs, with ``keep_updates``: the epochs left lengthen by the growth, so that the
    updates left stay the same ("Train longer, generalize better", Hoffer et al. 2017)."""
    return done + (epochs - done) * proposed / batch_size


BATCH_SIZE_TESTS = {"norm": AdaptiveBatchSize}
