"""Test-time adaptation methods: each takes a batch of unlabeled test inputs, returns logits for it and
may update the model on the way (predict-then-adapt, online, one pass).

* ``source``: the trained model as is (no adaptation): the reference.
* ``bn_adapt``: normalization layers use the statistics of the test batch instead of the training
  running averages (Schneider et al. 2020, "Improving robustness against common corruptions by
  covariate shift adaptation"; Nado et al. 2020).
* ``tent``: ``bn_adapt`` plus one gradient step per batch on the entropy of the predictions, updating
  only the affine parameters of the normalization layers (Wang et al. 2021, "Tent: Fully Test-Time
  Adaptation by Entropy Minimization").
* ``cotta``: a student updated toward an exponential-moving-average teacher, whose pseudo-labels are
  averaged over augmentations when the source model is unsure, and a stochastic restore of a small
  fraction of the weights to their source values each step, against error accumulation and forgetting
  over a long stream (Wang et al. 2022, "Continual Test-Time Domain Adaptation").
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from lifelong.data.scenarios import rotate
from lifelong.errors import ConfigError

NORMALIZATION = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def use_batch_statistics(model: nn.Module) -> None:
    """Eval mode, except batch-norm layers, which normalize with the current batch's statistics."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.train()
            module.track_running_stats = False
            module.running_mean, module.running_var = None, None


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row's softmax: (B, C) -> (B,)."""
    log_probs = logits.log_softmax(dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1)


class TestTimeMethod(ABC):
    """A test-time adaptation method: :meth:`setup` once with the source model, then :meth:`step` per batch."""

    model: nn.Module

    def setup(self, model: nn.Module, seed: int) -> None:
        """Take ``model`` (trained on the source domain; adapted in place) before the first batch."""
        self.model = model

    @abstractmethod
    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) for the batch ``x`` (B, ...), adapting on it where the method does."""


@dataclass
class Source(TestTimeMethod):
    """No adaptation: the source model in eval mode."""

    def setup(self, model: nn.Module, seed: int) -> None:
        super().setup(model, seed)
        model.eval()

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass
class BNAdapt(TestTimeMethod):
    """Normalize with the test batch's statistics; no parameter changes."""

    def setup(self, model: nn.Module, seed: int) -> None:
        super().setup(model, seed)
        use_batch_statistics(model)

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The affine weights and biases of the model's normalization layers."""
    return [p for m in model.modules() if isinstance(m, NORMALIZATION) for p in m.parameters(recurse=False)]


@dataclass
class Tent(TestTimeMethod):
    """Entropy minimization on the normalization layers' affine parameters (Wang et al. 2021)."""

    lr: float = 1e-3
    """Adam learning rate (the paper's setting for CIFAR-10-C)."""
    steps: int = 1
    """Gradient steps per test batch (the paper takes one)."""

    def setup(self, model: nn.Module, seed: int) -> None:
        super().setup(model, seed)
        use_batch_statistics(model)
        parameters = normalization_parameters(model)
        if not parameters:
            raise ConfigError("tta.method='tent' needs a model with normalization layers (BatchNorm, "
                              "LayerNorm, GroupNorm), this one has none; use a model with batch_norm=True")
        if self.steps < 1:
            raise ConfigError(f"tta.steps must be >= 1, got {self.steps}")
        model.requires_grad_(False)
        for p in parameters:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(parameters, lr=self.lr, betas=(0.9, 0.999))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.steps):
            logits = self.model(x)
            loss = entropy(logits).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return logits.detach()


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random mild view of images (N, C, H, W): small rotation, shift, contrast and noise (one draw per call)."""
    degrees = float(torch.empty(1).uniform_(-15.0, 15.0, generator=generator))
    shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
    view = torch.roll(rotate(x, degrees), shifts=(shift[0], shift[1]), dims=(2, 3))
    scale = float(torch.empty(1).uniform_(0.8, 1.2, generator=generator))
    mean = view.mean(dim=(1, 2, 3), keepdim=True)
    return ((view - mean) * scale + mean + 0.02 * torch.randn(view.shape, generator=generator)).clamp(0.0, 1.0)


@dataclass
class CoTTA(TestTimeMethod):
    """Mean teacher with augmentation-averaged pseudo-labels and stochastic restore (Wang et al. 2022)."""

    lr: float = 1e-3
    """Adam learning rate of the student (all parameters are updated)."""
    ema: float = 0.999
    """Teacher update ``teacher = ema * teacher + (1 - ema) * student``."""
    restore_probability: float = 0.01
    """Chance that each weight is reset to its source value after a step."""
    confidence_threshold: float = 0.92
    """Below this mean source confidence, the teacher's prediction is averaged over augmentations."""
    n_augmentations: int = 8

    def setup(self, model: nn.Module, seed: int) -> None:
        super().setup(model, seed)
        self.generator = torch.Generator().manual_seed(seed)
        use_batch_statistics(model)
        model.requires_grad_(True)
        self.source_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.teacher = copy.deepcopy(model).requires_grad_(False)
        self.anchor = copy.deepcopy(model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, betas=(0.9, 0.999))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_probs = self.teacher(x).softmax(dim=1)  # (B, C)
            confidence = self.anchor(x).softmax(dim=1).max(dim=1).values.mean()
            if confidence < self.confidence_threshold and x.ndim == 4:
                views = [self.teacher(augment(x, self.generator)).softmax(dim=1)
                         for _ in range(self.n_augmentations)]
                teacher_probs = torch.stack(views).mean(dim=0)
        student_logits = self.model(x)
        loss = -(teacher_probs * student_logits.log_softmax(dim=1)).sum(dim=1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for teacher_p, student_p in zip(self.teacher.parameters(), self.model.parameters(), strict=True):
                teacher_p.mul_(self.ema).add_(student_p, alpha=1.0 - self.ema)
            for name, p in self.model.named_parameters():
                restore = torch.rand(p.shape, generator=self.generator) < self.restore_probability
                p.copy_(torch.where(restore, self.source_state[name], p))
        return teacher_probs.clamp_min(1e-12).log()


METHODS: dict[str, type[TestTimeMethod]] = {"source": Source, "bn_adapt": BNAdapt, "tent": Tent, "cotta": CoTTA}
