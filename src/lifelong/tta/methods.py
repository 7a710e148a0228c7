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
* ``unmix_tns``: ``bn_adapt`` made robust to label-correlated batches and batches of one: each
  normalization layer mixes the instance's statistics with K online statistics components
  (Tomar et al. 2024, :mod:`lifelong.tta.unmix`).
* ``rmt``: a mean teacher with a symmetric cross-entropy consistency, plus a contrastive pull of the test
  features toward the nearest source class prototype (Doebler et al. 2023, "Robust Mean Teacher for
  Continual and Gradual Test-Time Adaptation").

Any method that adapts by gradient takes the open-set filter (name ``<method>+filter``, or
``open_set=OpenSetFilter()``): samples whose confidence fell below the source model's do not count in
the loss (Lee et al. 2023).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import TensorSet
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.tta.augment import RandomViews
from lifelong.tta.unmix import replace_batch_norm

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

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        """Take ``model`` (trained on the source domain; adapted in place) before the first batch;
        ``source``: the source training data, for methods that read it (``rmt``'s class prototypes)."""
        self.model = model

    @abstractmethod
    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) for the batch ``x`` (B, ...), adapting on it where the method does."""


@dataclass
class Source(TestTimeMethod):
    """No adaptation: the source model in eval mode."""

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        super().setup(model, seed, source)
        model.eval()

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass
class BNAdapt(TestTimeMethod):
    """Normalize with the test batch's statistics; no parameter changes."""

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        super().setup(model, seed, source)
        use_batch_statistics(model)

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The affine weights and biases of the model's normalization layers."""
    return [p for m in model.modules() if isinstance(m, NORMALIZATION) for p in m.parameters(recurse=False)]


@dataclass
class OpenSetFilter:
    """Adapt only on the samples whose confidence did not fall below the source model's.

    Lee, Das, Choo & Choi 2023, "Towards Open-Set Test-Time Adaptation Utilizing the Wisdom of Crowds in
    Entropy Minimization" (ICCV): self-training raises the confidence of the samples it gets right, while
    the confidence of wrong and open-set (unknown-class) samples drops below what the original model gave
    them, so those are left out of the loss. A sample counts when ``p_adapted(c) >= p_source(c) + margin``,
    ``c`` the class the source model predicts; ``margin = 0`` is the paper's rule. The source model is
    a frozen copy taken once the method has set up its normalization (batch statistics, as the adapted
    model). Departure: the paper also drops high-entropy samples (as EATA does); here only the
    confidence comparison filters.
    """

    margin: float = 0.0
    """How much more confident than the source model a sample must be to count (negative: more lenient)."""

    def setup(self, model: nn.Module) -> None:
        self.original = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def keep(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Which samples of ``x`` (B, ...) count, given the adapted model's ``logits`` (B, C): (B,) bool."""
        original = self.original(x).softmax(dim=1)
        rows, predicted = torch.arange(len(x)), original.argmax(dim=1)
        return logits.softmax(dim=1)[rows, predicted] >= original[rows, predicted] + self.margin


@dataclass
class GradientMethod(TestTimeMethod):
    """A method that adapts by gradient steps on a per-sample loss, with normalization layers on batch
    statistics; takes the optional :class:`OpenSetFilter`."""

    open_set: OpenSetFilter | None = field(default=None, kw_only=True)
    """Leave out of the loss the samples the filter drops (None: every sample counts)."""

    optimizer: torch.optim.Optimizer = field(init=False, repr=False)

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        super().setup(model, seed, source)
        use_batch_statistics(model)
        if self.open_set is not None:
            self.open_set.setup(model)

    def descend(self, losses: torch.Tensor, x: torch.Tensor, logits: torch.Tensor) -> None:
        """One optimizer step on the mean of ``losses`` (B,) over the samples that count; no step (not
        even Adam's momentum) when the filter drops them all."""
        if self.open_set is not None:
            losses = losses[self.open_set.keep(x, logits)]
            if not len(losses):
                return
        self.optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        self.optimizer.step()


@dataclass
class Tent(GradientMethod):
    """Entropy minimization on the normalization layers' affine parameters (Wang et al. 2021)."""

    lr: float = 1e-3
    """Adam learning rate (the paper's setting for CIFAR-10-C)."""
    steps: int = 1
    """Gradient steps per test batch (the paper takes one)."""

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        super().setup(model, seed, source)
        parameters = normalization_parameters(model)
        if not parameters:
            raise ConfigError("tta.method='tent' needs a model with normalization layers (BatchNorm, "
                              "LayerNorm, GroupNorm), this one has none; use a model with norm='batch'")
        if self.steps < 1:
            raise ConfigError(f"tta.steps must be >= 1, got {self.steps}")
        model.requires_grad_(False)
        for p in parameters:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(parameters, lr=self.lr, betas=(0.9, 0.999))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.steps):
            logits = self.model(x)
            self.descend(entropy(logits), x, logits)
        return logits.detach()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, ema: float) -> None:
    """``teacher = ema * teacher + (1 - ema) * student``, parameter by parameter."""
    for teacher_p, student_p in zip(teacher.parameters(), student.parameters(), strict=True):
        teacher_p.mul_(ema).add_(student_p, alpha=1.0 - ema)


@dataclass
class MeanTeacher(GradientMethod):
    """A student (all parameters, Adam) and an EMA copy of it, the teacher, with the method's own draws:
    what CoTTA and RMT share."""

    lr: float = 1e-3
    """Adam learning rate of the student (and of the modules the method adds, RMT's projector)."""
    ema: float = 0.999
    """Teacher update ``teacher = ema * teacher + (1 - ema) * student``."""
    augment: RandomViews = field(default_factory=RandomViews)
    """The random views of a test batch (CoTTA's reference augmentations, :mod:`lifelong.tta.augment`)."""

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        super().setup(model, seed, source)
        self.generator = torch.Generator().manual_seed(seed)
        model.requires_grad_(True)
        self.teacher = copy.deepcopy(model).requires_grad_(False)

    def update_teacher(self) -> None:
        ema_update(self.teacher, self.model, self.ema)


@dataclass
class CoTTA(MeanTeacher):
    """Mean teacher with augmentation-averaged pseudo-labels and stochastic restore (Wang et al. 2022).

    As the authors' code does: when the source model's mean confidence on the batch falls below
    ``confidence_threshold``, the teacher's *logits* are averaged over ``n_augmentations`` random views
    (the un-augmented batch not among them) and the student learns the softmax of that average by
    cross-entropy; otherwise the teacher's logits on the batch itself serve. The teacher's (averaged)
    logits are the prediction."""

    restore_probability: float = 0.01
    """Chance that each weight is reset to its source value after a step."""
    confidence_threshold: float = 0.92
    """Below this mean source confidence, the teacher's prediction is averaged over augmentations."""
    n_augmentations: int = 32
    """Views averaged (the paper's and the code's 32)."""

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        super().setup(model, seed, source)
        self.source_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.anchor = copy.deepcopy(model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, betas=(0.9, 0.999))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)  # (B, C)
            confidence = self.anchor(x).softmax(dim=1).max(dim=1).values.mean()
            if confidence < self.confidence_threshold and x.ndim == 4:
                views = [self.teacher(self.augment(x, self.generator)) for _ in range(self.n_augmentations)]
                teacher_logits = torch.stack(views).mean(dim=0)
        student_logits = self.model(x)
        targets = teacher_logits.softmax(dim=1)
        self.descend(-(targets * student_logits.log_softmax(dim=1)).sum(dim=1), x, student_logits)
        self.update_teacher()
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                restore = torch.rand(p.shape, generator=self.generator) < self.restore_probability
                p.copy_(torch.where(restore, self.source_state[name], p))
        return teacher_logits


@dataclass
class UnMixTNS(TestTimeMethod):
    """Batch-norm layers swapped for UnMix-TNS layers (Tomar et al. 2024); no parameter changes. The
    defaults are the paper's; see :mod:`lifelong.tta.unmix` for the equations and departures."""

    components: int = 16
    """K, the number of statistics components per layer."""
    alpha: float = 0.5
    """Share of the source variance spread between the components' means at initialization."""
    temperature: float = 0.07
    """tau of the softmax over cosine similarities that assigns an instance to the components."""
    centred: bool = False
    """Centre the components' random initial spread so that their mixture starts at the source mean
    exactly (an option; False is the authors' draw, :mod:`lifelong.tta.unmix`)."""

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        super().setup(model, seed, source)
        if self.components < 1:
            raise ConfigError(f"tta.components must be >= 1, got {self.components}")
        if not 0.0 <= self.alpha < 1.0:
            raise ConfigError(f"tta.alpha must lie in [0, 1), got {self.alpha}")
        if self.temperature <= 0.0:
            raise ConfigError(f"tta.temperature must be > 0, got {self.temperature}")
        model.eval()
        if not replace_batch_norm(model, self.components, self.alpha, self.temperature,
                                  torch.Generator().manual_seed(seed), self.centred):
            raise ConfigError("tta.method='unmix_tns' needs a model with BatchNorm layers, this one has none; "
                              "use a model with norm='batch'")

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def symmetric_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RMT's consistency loss, per sample: ``-1/2 sum_c (q_c log p_c + p_c log q_c)`` with p the student's
    and q the teacher's softmax over logits (B, C) -> (B,); the teacher is not differentiated."""
    teacher = teacher.detach()
    return -0.5 * ((teacher.softmax(dim=1) * student.log_softmax(dim=1)).sum(dim=1)
                   + (student.softmax(dim=1) * teacher.log_softmax(dim=1)).sum(dim=1))


def contrastive_loss(views: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample contrastive loss over ``views`` (B, V, D) (unit rows): each view is an anchor, the other
    views of its sample are its positives, every view of the other samples a negative (Khosla et al.
    2020's SupCon without labels, as RMT uses it); (B,), the mean over each sample's anchors."""
    batch, n_views = views.shape[:2]
    flat = views.transpose(0, 1).reshape(batch * n_views, -1)  # view-major: row v * B + b
    logits = flat @ flat.T / temperature
    self_pair = torch.eye(len(flat), dtype=torch.bool)
    sample = torch.arange(batch).repeat(n_views)
    positive = (sample.unsqueeze(0) == sample.unsqueeze(1)) & ~self_pair
    log_prob = logits - logits.masked_fill(self_pair, float("-inf")).logsumexp(dim=1, keepdim=True)
    per_anchor = -(log_prob * positive).sum(dim=1) / positive.sum(dim=1)  # (B * V,)
    return per_anchor.view(n_views, batch).mean(dim=0)


@dataclass
class RMT(MeanTeacher):
    """Robust Mean Teacher (Doebler, Marsden & Yang 2023, CVPR).

    The student (all parameters, Adam) learns from an EMA teacher through the symmetric cross-entropy of
    its predictions on the test batch and on an augmented view (weight 1/2 each), plus a contrastive loss
    that pulls each test feature, its augmented view and its nearest source class prototype (cosine)
    together through a two-layer projector; the prediction is the sum of student and teacher logits.
    Prototypes are the class means of the source model's features (eval mode) on the source training data,
    which the loop passes in. Defaults are the paper's CIFAR-10-C settings (Adam lr 1e-3, EMA 0.999,
    contrastive temperature 0.1 and weight 1, projector width 128), the augmentations CoTTA's
    (:class:`~lifelong.tta.augment.RandomViews`, as RMT's code takes them). Departures: no warm-up on
    source data before the stream and no source replay loss (the loop adapts on the test stream alone;
    the paper's warm-up initializes the teacher on 50,000 source samples).
    """

    temperature: float = 0.1
    """Temperature of the contrastive loss."""
    contrast_weight: float = 1.0
    """Weight of the contrastive loss beside the symmetric cross-entropy."""
    projection_dim: int = 128
    """Width of the projector the contrastive loss compares features in."""

    def setup(self, model: nn.Module, seed: int, source: TensorSet | None = None) -> None:
        if source is None:
            raise ConfigError("tta.method='rmt' needs the source training data for its class prototypes: "
                              "pass source=... to adapt() (run_tta passes the clean training set)")
        if source.x.ndim != 4:
            raise ConfigError(f"tta.method='rmt' augments images (N, C, H, W), got inputs of shape "
                              f"{tuple(source.x.shape[1:])}; use an image dataset")
        self.backbone, self.head = split_model(model)
        self.prototypes = self.source_prototypes(source)
        super().setup(model, seed, source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            width = self.prototypes.shape[1]
            self.projector = nn.Sequential(nn.Linear(width, self.projection_dim), nn.ReLU(),
                                           nn.Linear(self.projection_dim, self.projection_dim))
        self.optimizer = torch.optim.Adam([*model.parameters(), *self.projector.parameters()], lr=self.lr,
                                          betas=(0.9, 0.999))

    @torch.no_grad()
    def source_prototypes(self, source: TensorSet, chunk: int = 256) -> torch.Tensor:
        """(classes present in ``source``, D) mean source feature per class, source model in eval mode."""
        self.backbone.eval()
        features = torch.cat([self.backbone(source.x[i:i + chunk]) for i in range(0, len(source.y), chunk)])
        return torch.stack([features[source.y == c].mean(dim=0) for c in source.y.unique()])

    def step(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)  # (B, D)
        logits = self.head(features)
        augmented = self.backbone(self.augment(x, self.generator))
        with torch.no_grad():
            teacher_logits = self.teacher(x)
            nearest = (F.normalize(features, dim=1) @ F.normalize(self.prototypes, dim=1).T).argmax(dim=1)
        consistency = 0.5 * (symmetric_cross_entropy(logits, teacher_logits)
                             + symmetric_cross_entropy(self.head(augmented), teacher_logits))
        views = torch.stack([self.prototypes[nearest], features, augmented], dim=1)  # (B, 3, D)
        contrast = contrastive_loss(F.normalize(self.projector(views), dim=2), self.temperature)
        self.descend(consistency + self.contrast_weight * contrast, x, logits)
        self.update_teacher()
        return (logits + teacher_logits).detach()


METHODS: dict[str, type[TestTimeMethod]] = {"source": Source, "bn_adapt": BNAdapt, "tent": Tent, "cotta": CoTTA,
                                            "unmix_tns": UnMixTNS, "rmt": RMT}

FILTERED = "+filter"
"""Suffix of a method name that adds the :class:`OpenSetFilter` (``tent+filter``)."""


def build_method(name: str) -> TestTimeMethod:
    """The method called ``name`` with its default settings: a key of :data:`METHODS`, optionally followed
    by ``+filter`` for a gradient method."""
    base = name.removesuffix(FILTERED)
    if base not in METHODS:
        raise ConfigError(f"tta.method: unknown method {name!r}; allowed: {', '.join(METHODS)} "
                          f"(gradient methods also as <method>{FILTERED})")
    method = METHODS[base]
    if base == name:
        return method()
    if not issubclass(method, GradientMethod):
        gradient = [n for n, m in METHODS.items() if issubclass(m, GradientMethod)]
        raise ConfigError(f"tta.method: {name!r}: the open-set filter needs a method that adapts by gradient "
                          f"({', '.join(gradient)}); drop {FILTERED!r}")
    return method(open_set=OpenSetFilter())
