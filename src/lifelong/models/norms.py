"""The normalization layers every built-in model can take (``model.norm``), and the scenario each is for.

========== ============================================================ =========================================
``norm``   layer                                                        meant for
========== ============================================================ =========================================
``batch``  BatchNorm (Ioffe & Szegedy 2015)                             offline training, i.i.d. batches of 16+
``ghost``  BatchNorm over virtual batches of 32 (Hoffer et al. 2017,    large batches (it only differs above 32)
           :mod:`~lifelong.models.ghost_batch_norm`)
``group``  GroupNorm (Wu & He 2018), at most ``norm_groups`` groups     any batch: per-sample, same in training
                                                                        and test
``layer``  LayerNorm (Ba et al. 2016): GroupNorm with one group on      any batch, as ``group``
           feature maps, ``nn.LayerNorm`` on features
``ws_bcn`` Weight Standardization + Batch-Channel Normalization         streams of tiny batches (down to one
           (Qiao et al. 2019, :class:`WSConv2d`, :class:`WSLinear`,     sample): statistics estimated across
           :class:`BatchChannelNorm`)                                   batches, then per-sample normalization
``adab2n`` Adaptive Balance of BN (Lyu et al. 2023, :class:`AdaB2N`)    replay in class-incremental streams:
                                                                        batches that mix tasks unevenly
``none``   the identity                                                 a baseline
========== ============================================================ =========================================

Why streams need more than BatchNorm: online continual learning sees each sample once, in small batches
whose labels are correlated (one experience's classes at a time). Batch statistics of a few correlated
samples are noisy and biased towards the current task, and the running statistics used at test time
drift towards the most recent task ("recency bias"). BatchNorm and Ghost BN also refuse a batch of one
vector in training mode (PyTorch: "Expected more than 1 value per channel when training"), as does
:class:`AdaB2N`: a single sample has no variance across the batch. LayerNorm, GroupNorm and WS+BCN
normalize each sample (BCN with statistics estimated over past batches first), so batch size and
composition do not change a sample's output.

:func:`begin_experience` is the hook by which the runner tells layers which experience starts (AdaB2N
counts tasks with it), and :func:`forward_with_tasks` the one by which a strategy's forward pass tells
them the task of each sample of a mixed (replay) batch.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError
from lifelong.models.ghost_batch_norm import GhostBatchNorm, GhostBatchNorm2d

NORMS = ("adab2n", "batch", "ghost", "group", "layer", "none", "ws_bcn")
"""The allowed values of ``model.norm``."""

MAX_TASKS = 64
"""Tasks an :class:`AdaB2N` layer keeps a prior weight for."""


def check_norm(norm: str, groups: int) -> None:
    """Raise a one-line :class:`~lifelong.errors.ConfigError` for an unknown ``model.norm`` or a
    non-positive ``model.norm_groups``."""
    if norm not in NORMS:
        raise ConfigError(f"model.norm must be one of {list(NORMS)}, got {norm!r}")
    if groups < 1:
        raise ConfigError(f"model.norm_groups must be a positive number of groups, got {groups}")


def group_count(channels: int, groups: int) -> int:
    """The largest number of groups that divides ``channels`` and is at most ``groups``."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def norm_layer(norm: str, channels: int, groups: int = 8, maps: bool = True) -> nn.Module:
    """The layer ``norm`` (see the module's table) for ``channels`` feature maps (B, C, H, W), or, with
    ``maps`` False, ``channels`` features (B, C). ``groups``: of ``group`` and of BCN's channel
    normalization, the largest divisor of ``channels`` not above it (:func:`group_count`)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels) if maps else nn.BatchNorm1d(channels)
    if norm == "ghost":
        return GhostBatchNorm2d(channels) if maps else GhostBatchNorm(channels)
    if norm == "group":
        return nn.GroupNorm(group_count(channels, groups), channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels) if maps else nn.LayerNorm(channels)
    if norm == "ws_bcn":
        return BatchChannelNorm(channels, group_count(channels, groups))
    if norm == "adab2n":
        return AdaB2N(channels)
    return nn.Identity()


def conv_type(norm: str) -> type[nn.Conv2d]:
    """The convolution that goes before ``norm``: weight-standardized for ``ws_bcn`` (the pairing of
    Qiao et al.), plain otherwise."""
    return WSConv2d if norm == "ws_bcn" else nn.Conv2d


def linear_type(norm: str) -> type[nn.Linear]:
    """The linear layer that goes before ``norm`` (see :func:`conv_type`)."""
    return WSLinear if norm == "ws_bcn" else nn.Linear


def standardized(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight`` with each output channel (first dimension) shifted to mean 0 and scaled to variance
    ``var / (var + eps)`` (1 but for ``eps``), its population variance."""
    flat = weight.flatten(1)
    var, mean = torch.var_mean(flat, dim=1, correction=0, keepdim=True)
    return ((flat - mean) * torch.rsqrt(var + eps)).view_as(weight)


class WSConv2d(nn.Conv2d):
    """A convolution with Weight Standardization (Qiao, Wang, Liu, Shen & Yuille 2019, "Micro-Batch
    Training with Batch-Channel Normalization and Weight Standardization", Eq. 5): each forward pass
    convolves with the weight standardized per output channel, ``(W - mean) / sqrt(var + eps)``, and the
    gradient flows through the standardization. It smooths the loss landscape without batch statistics.

    Departure: the variance is the population one (the reference code's is unbiased), so that the
    standardized weight has variance exactly ``var / (var + eps)``."""

    eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardized(self.weight, self.eps), self.bias)


class WSLinear(nn.Linear):
    """A linear layer with Weight Standardization per output feature (see :class:`WSConv2d`)."""

    eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, standardized(self.weight, self.eps), self.bias)


def _channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    """(1, C, 1, ...): a per-channel vector's shape broadcast against ``x`` (B, C, ...)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


class BatchChannelNorm(nn.Module):
    """Batch-Channel Normalization with estimated statistics (Qiao et al. 2019, Sec. 5, the micro-batch
    variant): a batch normalization by running estimates of each channel's mean and variance, then a
    channel normalization of each sample over groups of channels; inputs (B, C) or (B, C, H, W).

    In training each batch first updates the estimates, ``mean <- mean + momentum (batch mean - mean)``
    and ``var <- var + momentum (mean((x - mean_old)^2) - var)`` (the second moment around the previous
    estimate, as in the reference ``EstBN``), without gradient; the batch is then normalized by the
    updated estimates, with a per-channel affine. Since no statistic comes from the batch alone, a
    batch of one sample is normalized like any other. The channel normalization (GroupNorm without
    the batch, ``groups`` groups) then removes what the estimates miss per sample, which keeps the
    network away from the "elimination singularities" the paper studies; it has its own affine. Test
    mode normalizes by the estimates without updating them.

    Departures from the reference (``joe-siyuan-qiao/Batch-Channel-Normalization``): the estimates move
    at a fixed ``momentum`` (the reference reads its speed from a buffer its training script sets); the
    channel normalization's affine is per channel, as GroupNorm's (the reference's is per group).
    """

    def __init__(self, channels: int, groups: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"groups ({groups}) must divide channels ({channels})")
        self.groups, self.momentum, self.eps = groups, momentum, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.channel_weight = nn.Parameter(torch.ones(channels))
        self.channel_bias = nn.Parameter(torch.zeros(channels))
        self.running_mean: torch.Tensor
        self.running_var: torch.Tensor
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.running_mean, self.running_var
        if self.training:
            with torch.no_grad():
                dims = [0, *range(2, x.ndim)]
                around = (x - mean.view(_channel_shape(x))).square().mean(dims)
                mean.lerp_(x.mean(dims).to(mean.dtype), self.momentum)
                var.lerp_(around.to(var.dtype), self.momentum)
            mean, var = mean.clone(), var.clone()  # a later update in place must not touch this graph
        shape = _channel_shape(x)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        out = out * self.weight.view(shape) + self.bias.view(shape)
        return F.group_norm(out, self.groups, self.channel_weight, self.channel_bias, self.eps)

    def extra_repr(self) -> str:
        return f"{len(self.weight)}, groups={self.groups}, momentum={self.momentum}, eps={self.eps}"


class AdaB2N(nn.Module):
    """Adaptive Balance of BN (Lyu, Wang, Zhang, Sun, Su, Zhu & Jing 2023, "Overcoming Recency Bias of
    Normalization Statistics in Continual Learning: Balance and Adaptation", NeurIPS); inputs (B, C) or
    (B, C, H, W).

    *Balance (training).* A replay batch mixes the current task's samples with a few of each old task's,
    so its plain statistics are the current task's. AdaB2N normalizes by a weighted mixture of the
    batch's task-wise statistics: with ``n_t`` samples of task ``t`` in the batch, the task weights are
    the mean of a Dirichlet posterior, ``pi_t = (exp(phi_t) + n_t) / sum_s (exp(phi_s) + n_s)`` over the
    tasks seen so far, with a learnable log-prior ``phi`` (initialised to 0); the mean is
    ``sum_t pi_t mean_t`` and the variance ``sum_t pi_t mean_t((x - mean)^2)``, both differentiable (to
    ``phi`` too). The tasks of the samples come from :func:`forward_with_tasks`; without them (a
    forward pass outside a strategy's :meth:`~lifelong.strategies.base.Strategy.logits`), and in the
    first experience, the batch's plain statistics are used.

    *Adaptation (testing).* The running statistics (used in test mode) follow the batch statistics with
    the modified momentum ``eta_1 = m^kappa``, ``eta_(k+1) = eta_k / (eta_k + (1 - m)^kappa)``:
    ``kappa`` 1 is BatchNorm's fixed momentum ``m``, ``kappa`` 0 the cumulative average ``1/k`` of every
    batch since the start (balanced over tasks, slow to adapt), values between interpolate (the
    sequence tends to ``1 - (1 - m)^kappa``). ``eta`` is a buffer, so a resumed run continues it.

    Departures from the reference (``lvyilin/AdaB2N``, ``models/utils/adab2n.py``): the task weights
    are renormalized over the tasks present in the batch (the reference's sum over every seen task
    shrinks the statistics towards 0 when a task has no sample in the batch); the regularizer that
    pulls batch statistics towards running ones (``lambda``, added by the reference's strategies to
    their loss) is left out, since strategies compute their losses without knowing about norm layers,
    so ``phi`` learns from the training loss alone; tasks are the samples' task labels (the experience
    index in class- and task-incremental streams), at most :data:`MAX_TASKS`.
    """

    def __init__(self, channels: int, momentum: float = 0.1, kappa: float = 0.5, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0.0 <= kappa <= 1.0 or not 0.0 < momentum <= 1.0:
            raise ValueError(f"AdaB2N needs 0 <= kappa <= 1 and 0 < momentum <= 1, got {kappa} and {momentum}")
        self.momentum, self.kappa, self.eps = momentum, kappa, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_prior = nn.Parameter(torch.zeros(MAX_TASKS))
        """``phi``: the log of each task's Dirichlet prior concentration."""
        self.running_mean: torch.Tensor
        self.running_var: torch.Tensor
        self.eta: torch.Tensor
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("eta", torch.zeros((), dtype=torch.float64))
        """The last momentum used (0 before the first training batch)."""
        self.experience = 0
        """The experience being trained (:meth:`begin_experience`): tasks 0 to it have weights."""

    def begin_experience(self, index: int) -> None:
        if index >= MAX_TASKS:
            raise ConfigError(f"model.norm='adab2n' balances at most {MAX_TASKS} tasks, experience {index} "
                              "starts; use fewer experiences or another model.norm")
        self.experience = index

    def next_momentum(self) -> float:
        """Advance the modified momentum sequence by one batch and return its new value."""
        m, kappa, last = self.momentum, self.kappa, float(self.eta)
        eta = m ** kappa if last == 0.0 else last / (last + (1.0 - m) ** kappa)
        self.eta.fill_(eta)
        return eta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = _channel_shape(x)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if x.numel() // x.shape[1] < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
        positions = list(range(2, x.ndim))
        tasks = SAMPLE_TASKS.get()
        if self.experience == 0 or tasks is None or len(tasks) != len(x):
            var, mean = torch.var_mean(x, [0, *positions], correction=0)
        else:
            counts = torch.bincount(tasks, minlength=self.experience + 1).to(x.dtype)
            tasks_here = len(counts)
            concentration = (self.log_prior[:tasks_here].exp() + counts) * (counts > 0)
            per_sample = (concentration / concentration.sum() / counts.clamp(min=1))[tasks]
            sample_means = x.mean(positions) if positions else x
            mean = per_sample @ sample_means
            centred = (x - mean.view(shape)).square()
            var = per_sample @ (centred.mean(positions) if positions else centred)
        with torch.no_grad():
            eta = self.next_momentum()
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), eta)
            self.running_var.lerp_(var.detach().to(self.running_var.dtype), eta)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{len(self.weight)}, momentum={self.momentum}, kappa={self.kappa}, eps={self.eps}"


class ExperienceAware(Protocol):
    """A module told when an experience starts (:func:`begin_experience`)."""

    def begin_experience(self, index: int) -> None: ...


def begin_experience(model: nn.Module, index: int) -> None:
    """Tell every submodule of ``model`` that defines ``begin_experience(index)`` that experience
    ``index`` starts; the runner calls it before each experience (a resumed one too)."""
    for module in model.modules():
        if hasattr(type(module), "begin_experience"):  # ExperienceAware; a class attribute is read fast
            module.begin_experience(index)


SAMPLE_TASKS: ContextVar[torch.Tensor | None] = ContextVar("sample_tasks", default=None)
"""Each sample's task (B,) while :func:`forward_with_tasks` calls a training model, read by its
:class:`AdaB2N` layers; None outside such a call. A context variable holds it, not the layers: it lasts
exactly the call (nested calls restore the outer value), whatever model the layers belong to, and
nothing has to find or remember a model's layers."""


def forward_with_tasks(model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """``model(x)``, with every :class:`AdaB2N` layer of a training model told each sample's task
    (``task``, (B,)) for the duration of the call (:data:`SAMPLE_TASKS`)."""
    if not model.training:
        return model(x)
    token = SAMPLE_TASKS.set(task)
    try:
        return model(x)
    finally:
        SAMPLE_TASKS.reset(token)


NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                                           BatchChannelNorm, AdaB2N)
"""Normalization layers (BatchNorm and its ghost variant, InstanceNorm, GroupNorm, LayerNorm, the
library's BCN and AdaB2N): the per-task tensors of BN-only and CLR, the trainable part of
``model.freeze = "norm-only"``."""
