"""UnMix-TNS normalization: batch-norm statistics un-mixed into K components, so that a test batch whose
labels are correlated (or a batch of one) is normalized as if it were an i.i.d. batch.

Tomar, Vray, Thiran & Bozorgtabar 2024, "Un-Mixing Test-Time Normalization Statistics: Combatting Label
Temporal Correlation" (ICLR). For each batch-norm layer with source statistics (mu_s, sigma_s^2):

* init: K components, mean ``mu_k = mu_s + sqrt(alpha K / (K - 1)) sigma_s eps_k`` (eps_k ~ N(0, I)),
  variance ``sigma_k^2 = (1 - alpha) sigma_s^2``: the equal mixture of the K components has, in
  expectation, the source mean and variance. With ``centred`` (an option, not the authors' rule) the
  draws are centred, ``eps_k - mean_j eps_j``, so that the mixture's mean *is* the source mean (the
  authors' draw puts it off by ``sigma_s sqrt(alpha / (K - 1))`` in each channel, typically: about 0.18
  sigma_s at K = 16 and alpha = 0.5, which an un-adapted model pays for) and its variance is still the
  source's in expectation (the factor K / (K - 1) is exactly the centring's correction);
* per instance b: its statistics (mu~_b, sigma~_b^2) over the spatial positions, and its assignment
  ``p_bk = softmax_k(cos(mu~_b, mu_k) / tau)``;
* normalization: each component is pulled toward the instance, ``mu^_bk = (1 - p_bk) mu_k + p_bk mu~_b``
  (likewise the variances), and the instance is normalized with the mean and variance of the equal
  mixture of these K components (law of total variance);
* online un-mixing: ``mu_k += lambda * mean_b p_bk (mu~_b - mu_k)`` (likewise the variances), after the
  batch is normalized.

Defaults are the paper's (K = 16, alpha = 0.5, tau = 0.07, the layer's batch-norm momentum m = 0.1 scaled
to the batch size B as ``lambda = 1 - (1 - m) ** (B / 64)``, the authors' correction for batches other than
their 64). Departures: ``lambda`` is computed from each batch's own size (the last, shorter batch of a
domain included) rather than once from the configured batch size; inputs without spatial positions
(``BatchNorm1d`` on (B, C)) have no instance variance, so those layers normalize with the source statistics,
as the authors' code does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import ConfigError

REFERENCE_BATCH = 64
"""Batch size at which the momentum applies unscaled (the authors' maximum batch size)."""


class UnMixTNSNorm(nn.Module):
    """Drop-in replacement of one trained batch-norm layer (its affine parameters are shared, not copied)."""

    means: torch.Tensor
    variances: torch.Tensor
    source_mean: torch.Tensor
    source_var: torch.Tensor

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, components: int = 16, alpha: float = 0.5,
                 temperature: float = 0.07, generator: torch.Generator | None = None, centred: bool = False) -> None:
        super().__init__()
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError("tta.method='unmix_tns' needs batch-norm layers that tracked running statistics "
                              "during training (track_running_stats=True)")
        mean, var = bn.running_mean.detach().clone(), bn.running_var.detach().clone()
        spread = math.sqrt(alpha * components / (components - 1)) if components > 1 else 0.0
        noise = torch.randn((components, mean.numel()), generator=generator).to(mean)  # (K, C)
        if centred:
            noise = noise - noise.mean(dim=0)
        self.register_buffer("source_mean", mean)
        self.register_buffer("source_var", var)
        self.register_buffer("means", mean + spread * var.sqrt() * noise)  # (K, C)
        shrink = 1.0 - alpha if components > 1 else 1.0
        self.register_buffer("variances", shrink * var.expand(components, -1).clone())  # (K, C)
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps
        self.temperature = temperature
        self.momentum = bn.momentum if bn.momentum is not None else 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            mean, var = self.source_mean.expand_as(x), self.source_var.expand_as(x)
        else:
            mean, var = self.unmix(x)
        spatial = (1,) * (x.ndim - 2)
        out = (x - mean.view(*mean.shape, *spatial)) / (var.view(*var.shape, *spatial) + self.eps).sqrt()
        if self.weight is not None and self.bias is not None:
            out = out * self.weight.view(1, -1, *spatial) + self.bias.view(1, -1, *spatial)
        return out

    def unmix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed (mean, variance), each (B, C), that normalize ``x`` (B, C, ...); then the components'
        online update."""
        dims = tuple(range(2, x.ndim))
        instance_mean, instance_var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)  # (B, C)
        with torch.no_grad():
            similarity = F.normalize(instance_mean, dim=1) @ F.normalize(self.means, dim=1).T  # (B, K)
            p = (similarity / self.temperature).softmax(dim=1).unsqueeze(-1)  # (B, K, 1)
        means = (1.0 - p) * self.means + p * instance_mean.unsqueeze(1)  # (B, K, C)
        variances = (1.0 - p) * self.variances + p * instance_var.unsqueeze(1)
        mean = means.mean(dim=1)
        var = variances.mean(dim=1) + means.pow(2).mean(dim=1) - mean.pow(2)
        with torch.no_grad():
            rate = 1.0 - (1.0 - self.momentum) ** (x.shape[0] / REFERENCE_BATCH)
            self.means += rate * (p * (instance_mean.unsqueeze(1) - self.means)).mean(dim=0)
            self.variances += rate * (p * (instance_var.unsqueeze(1) - self.variances)).mean(dim=0)
        return mean, var


def replace_batch_norm(model: nn.Module, components: int = 16, alpha: float = 0.5, temperature: float = 0.07,
                       generator: torch.Generator | None = None, centred: bool = False) -> int:
    """Swap every ``BatchNorm1d``/``BatchNorm2d`` of ``model`` for an :class:`UnMixTNSNorm` built from it, in
    place; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
                setattr(parent, name, UnMixTNSNorm(child, components, alpha, temperature, generator, centred))
                swapped += 1
    return swapped
