"""RanPAC: random projection of frozen features and a ridge classifier from accumulated Gram matrices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.models.nets import split_model
from lifelong.strategies.base import FEATURE_STATISTICS, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.adaptation import FirstSessionAdaptation, adaptation_capabilities
from lifelong.strategies.parts.backbones import check_backbone_path
from lifelong.strategies.parts.features import extract_features, restrict_to_classes

RIDGES = tuple(10.0**power for power in range(-8, 9))
"""The candidate ridge strengths, as in the reference code (``10.0**np.arange(-8, 9)``: 10^-8 ... 10^8)."""


def held_out_errors(fit: torch.Tensor, fit_targets: torch.Tensor, check: torch.Tensor, check_targets: torch.Tensor,
                    ridges: tuple[float, ...]) -> torch.Tensor:
    """Mean squared error (R,) on ``check`` (n, M) against ``check_targets`` (n, C) of the ridge solution
    ``(X^T X + lambda I)^-1 X^T Y`` fitted on ``fit`` X (N, M), ``fit_targets`` Y (N, C), for each lambda,
    from one eigendecomposition: of ``X^T X`` (M, M), or of the kernel ``X X^T`` (N, N) when N < M, by
    the identity ``(X^T X + lambda I)^-1 X^T = X^T (X X^T + lambda I)^-1``."""
    dual = len(fit) < fit.shape[1]
    values, vectors = torch.linalg.eigh(fit @ fit.T if dual else fit.T @ fit)  # (K,), (K, K)
    rotated = vectors.T @ (fit_targets if dual else fit.T @ fit_targets)  # (K, C)
    ridge = torch.tensor(ridges, dtype=fit.dtype, device=fit.device).view(-1, 1, 1)  # (R, 1, 1)
    solutions = vectors @ (rotated / (values.unsqueeze(1) + ridge))  # (R, K, C)
    predictions = (check @ fit.T if dual else check) @ solutions  # (R, n, C)
    return ((predictions - check_targets) ** 2).mean(dim=(1, 2))


@dataclass
class RanPAC(Strategy):
    """RanPAC (McDonnell, Gong, Parvaneh, Abbasnejad & van den Hengel, NeurIPS 2023, "RanPAC: Random
    Projections and Pre-trained Models for Continual Learning").

    After the backbone is frozen, each sample's features f (D,) are projected by a fixed random matrix
    W (D, M), N(0, 1) entries, through a ReLU, ``h = ReLU(f W)``, and the class prototypes are kept as the
    Gram matrix ``G += H^T H`` (M, M) and ``C += H^T Y`` (M, classes) with one-hot targets Y, added to at
    every experience (a class that returns adds to its column). The classifier is the ridge solution
    ``W_out = (G + lambda I)^-1 C`` and a sample's logits ``h W_out`` over the seen classes. ``lambda`` is
    chosen at every experience as the reference code does: among :data:`RIDGES`, the candidate whose
    solution fitted on 80 % of the experience's projected features has the least mean squared error to
    the one-hot targets of the other 20 %; the test set is never used. No gradient step after the backbone
    is frozen.

    First-session adaptation (the paper's Phase 1) is
    :class:`~lifelong.strategies.parts.adaptation.FirstSessionAdaptation`: the whole backbone trains with
    cross-entropy on the first ``adapt_experiences`` experiences and/or is loaded from ``backbone_path``; 0
    keeps the backbone as it is.

    Departures from the reference code (github.com/RanPAC/RanPAC): Phase 1 trains the whole backbone, where
    the reference tunes a parameter-efficient module (adapter, SSF or VPT) of an ImageNet-pretrained ViT;
    the held-out 20 % that chooses lambda is drawn at random, not the last 20 % of the experience in the
    loader's order (which may be ordered by class); the projection's width defaults to 2048, not 10000
    (the features of the library's small models are 64 to 128 wide, not 768).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        averaging=frozenset({"interpolate", "merge"}),
        averaging_refusal=FEATURE_STATISTICS,
    )

    adapt_experiences: Annotated[int, Ge(0)] = 1
    """Experiences whose data train the backbone before it is frozen (first-session adaptation, merged
    into one session); 0 keeps the initial or loaded backbone as it is."""
    backbone_path: str = ""
    """A backbone state dict (``torch.save`` or ``.safetensors``, or a ``lifelong pretrain`` file) loaded before
    the first experience (:mod:`lifelong.models.weights`); empty: none."""
    projection_dim: Annotated[int, Ge(1)] = 2048
    """M, the width of the random projection (10000 in the paper, for 768-dimensional ViT features)."""
    ridge: Annotated[float, Ge(0)] = 0.0
    """A fixed ridge strength lambda > 0; 0 chooses it at each experience on a held-out split."""
    validation_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.2
    """Part of each experience's training samples held out to choose lambda (0.2 in the reference code)."""
    adaptation: FirstSessionAdaptation = field(init=False, repr=False)
    projection: torch.Tensor | None = field(default=None, init=False, repr=False)  # (D, M)
    gram: torch.Tensor | None = field(default=None, init=False, repr=False)  # (M, M), float64
    targets: torch.Tensor | None = field(default=None, init=False, repr=False)  # (M, classes), float64
    weights: torch.Tensor | None = field(default=None, init=False, repr=False)  # (M, classes)
    chosen_ridges: list[float] = field(default_factory=list, init=False, repr=False)
    projection_seed: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)

    @property
    def capabilities(self) -> Capabilities:
        return adaptation_capabilities(self.CAPABILITIES, self.adapt_experiences)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.adaptation = FirstSessionAdaptation(self.adapt_experiences, self.backbone_path)
        self.projection, self.gram, self.targets, self.weights, self.chosen_ridges = None, None, None, None, []
        self.projection_seed = derive_seed(context.seed, 0x2A9)

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        return self.adaptation.plan(experiences, index)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.adaptation.before_experience(model)

    def training_set(self, experience: Experience) -> TensorSet:
        return self.adaptation.training_set(experience)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        data = self.adaptation.after_experience(experience)
        if data is not None:
            self.fit_classes(model, data)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """``ReLU(f W)`` (N, M) of features (N, D)."""
        assert self.projection is not None
        return F.relu(features @ self.projection.to(features.dtype))

    def fit_classes(self, model: nn.Module, data: TensorSet) -> None:
        """Add the data to G and C and solve for the classifier, on the backbone's device, where the
        projection, G, C and the classifier stay (drawn on the CPU: the same on every device)."""
        features = extract_features(split_model(model)[0], data.x)  # (N, D)
        device = features.device
        if self.projection is None:
            generator = torch.Generator().manual_seed(self.projection_seed)
            self.projection = torch.randn(features.shape[1], self.projection_dim, generator=generator).to(device)
            self.gram = torch.zeros(self.projection_dim, self.projection_dim, dtype=torch.float64, device=device)
            self.targets = torch.zeros(self.projection_dim, self.n_classes, dtype=torch.float64, device=device)
        assert self.gram is not None and self.targets is not None
        projected = self.project(features).to(torch.float64)  # (N, M)
        onehot = F.one_hot(data.y.to(device), self.n_classes).to(torch.float64)  # (N, classes)
        self.gram += projected.T @ projected
        self.targets += projected.T @ onehot
        ridge = self.ridge or self.choose_ridge(projected, onehot)
        self.chosen_ridges.append(ridge)
        identity = torch.eye(self.projection_dim, dtype=torch.float64, device=device)
        self.weights = torch.linalg.solve(self.gram + ridge * identity, self.targets).to(torch.float32)

    def choose_ridge(self, projected: torch.Tensor, onehot: torch.Tensor) -> float:
        """The candidate of :data:`RIDGES` whose solution on a random ``1 - validation_fraction`` of
        ``projected`` (N, M) predicts the held-out rest's one-hot targets with the least squared error."""
        order = torch.randperm(len(projected), generator=self.generator)
        held_out = max(1, round(self.validation_fraction * len(projected)))
        fit, check = order[held_out:], order[:held_out]
        errors = held_out_errors(projected[fit], onehot[fit], projected[check], onehot[check], RIDGES)  # (R,)
        return RIDGES[int(errors.argmin())]

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return super().predict(model, x, task)
        projected = self.project(extract_features(split_model(model)[0], x))  # (B, M)
        logits = projected @ self.weights.to(projected.dtype)  # (B, classes)
        return restrict_to_classes(self.mask_logits(logits, task), self.seen_classes).argmax(dim=1)

    def memory_size(self) -> int:
        return self.adaptation.memory_size()

    def state_dict(self) -> dict[str, Any]:
        learned = {"projection": self.projection, "gram": self.gram, "targets": self.targets, "weights": self.weights}
        return {**super().state_dict(), **self.adaptation.state_dict(), **learned,
                "chosen_ridges": list(self.chosen_ridges)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.adaptation.load_state_dict(state, self.context.stream)
        device = next(model.parameters()).device  # a checkpoint is read onto the CPU
        self.projection, self.gram, self.targets, self.weights = (
            None if state[name] is None else state[name].to(device)
            for name in ("projection", "gram", "targets", "weights"))
        self.chosen_ridges = list(state["chosen_ridges"])
