"""Discrete key-value bottleneck: frozen features, frozen keys, and only the values the nearest keys select train."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt
from lifelong.data.lazy import as_tensor
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import (
    OWN_TENSORS,
    Capabilities,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.backbones import check_backbone_path, load_backbone
from lifelong.strategies.parts.features import extract_features


def kmeans(points: torch.Tensor, count: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` centres (count, d) of ``points`` (N, d) by Lloyd's algorithm: started from ``count`` distinct
    points drawn with ``generator`` (with repeats when there are fewer points than centres), then
    ``iterations`` rounds of assigning every point to its nearest centre and moving each centre to the mean of
    its points (a centre with no point stays where it is)."""
    start = torch.randperm(len(points), generator=generator)
    if len(points) < count:
        start = torch.cat([start, torch.randint(len(points), (count - len(points),), generator=generator)])
    centres = points[start[:count].to(points.device)].clone()
    for _ in range(iterations):
        nearest = torch.cdist(points, centres).argmin(dim=1)  # (N,)
        sums = torch.zeros_like(centres).index_add_(0, nearest, points)
        members = torch.bincount(nearest, minlength=count).unsqueeze(1)  # (count, 1)
        centres = torch.where(members > 0, sums / members.clamp_min(1), centres)
    return centres


@dataclass
class KVBottleneck(Strategy):
    """Discrete key-value bottleneck (Träuble, Goyal, Rahaman, Mozer, Kawaguchi, Bengio & Schölkopf, ICML 2023,
    "Discrete Key-Value Bottleneck"; reference code github.com/ftraeuble/discrete_key_value_bottleneck).

    The model's backbone is a frozen encoder (loaded from ``backbone_path``, or as the model holds it: its
    initial or ``model.weights`` weights). Its features f (D,) go through ``heads`` fixed random projections
    (each a (D, key_dim) Gaussian matrix with unit columns, the reference's ``RandomDownProjection``), and
    each head looks up its ``top`` nearest keys (Euclidean) in its own codebook of ``keys`` keys. Every key
    holds a value, a vector of class scores, and the logits are the mean of the selected values over the
    heads and their ``top`` keys (the paper's non-parametric average-pooling decoder for classification).

    The keys are fitted once, without labels, by k-means (``kmeans_iterations`` rounds, the reference's
    ``init_mode="kmeans"``) on the projected features of the first experience's training inputs, before any
    training step, and then frozen; the encoder and the projections never change. Only the values train,
    with cross-entropy over all classes: a step's gradient reaches only the values its samples selected, so
    a sample changes what the model says only near it in feature space (the paper's localized updates),
    and nothing needs a task boundary after the keys are fitted.

    Locality holds through the optimizer only when it keeps no state that moves a parameter without a
    gradient and no weight decay: plain SGD (as in the online benchmarks, momentum 0) changes exactly the
    selected values; momentum, Adam's moments or weight decay would move values selected earlier (or all).

    Departures from the paper: the keys are fitted on the first experience's inputs (labels unused), where
    the paper fits them on the encoder's pretraining data (e.g. ImageNet); the values start at zero, not as
    the reference's N(0, 1) draws: in one online pass a value is selected a few times and each step moves it
    by about ``lr / batch``, far less than the draws' spread over the mean of the heads (``1 / sqrt(heads)``),
    which would then decide the prediction; from zero the argmax is the learned votes'; the encoder is the library's
    model, not a self-supervised ResNet-50 or ViT; ``keys`` defaults to 64 per head, not 4096 (the digits'
    first experience has about 290 samples); the values' learning rate is the run's times ``value_lr_scale``,
    by default ``heads * top``: the mean divides each selected value's gradient by ``heads * top``, and the
    scale gives it back, so the run's learning rate moves a value as it would move a linear head's row.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    backbone_path: str = ""
    """A backbone state dict (``torch.save`` or ``.safetensors``, or a ``lifelong pretrain`` file) loaded before
    the first experience (:mod:`lifelong.models.weights`); empty: the model's own weights."""
    heads: Annotated[int, Ge(1)] = 64
    """C, the codebooks (heads) the features are projected into (256 in the paper's CIFAR runs)."""
    keys: Annotated[int, Ge(1)] = 64
    """Keys (and values) per codebook (4096 in the paper's CIFAR runs)."""
    key_dim: Annotated[int, Ge(1)] = 8
    """Dimensions of a head's projection and keys (14 in the paper's CIFAR runs)."""
    top: Annotated[int, Ge(1)] = 1
    """Nearest keys each head selects per sample (1 in the paper)."""
    kmeans_iterations: Annotated[int, Ge(0)] = 10
    """Lloyd rounds of the keys' k-means (10 in the reference's example)."""
    value_lr_scale: Annotated[float, Gt(0)] | None = None
    """The values' learning rate as a multiple of the run's; None: ``heads * top`` (class docstring)."""
    projection: torch.Tensor | None = field(default=None, init=False, repr=False)  # (C, D, d)
    codebook: torch.Tensor | None = field(default=None, init=False, repr=False)  # (C, M, d)
    values: nn.Parameter = field(init=False, repr=False)  # (C, M, classes)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)
        if self.top > self.keys:
            raise ConfigError(f"strategy.top ({self.top}) must be at most strategy.keys ({self.keys}): a head "
                              "selects among its own keys")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.projection = self.codebook = None
        self.values = nn.Parameter(torch.zeros(self.heads, self.keys, self.n_classes))

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Before the first experience: load the backbone, draw the projections and fit the keys."""
        backbone = split_model(model)[0]
        if self.codebook is None:
            if self.backbone_path:
                load_backbone(backbone, self.backbone_path)
            self.fit_keys(extract_features(backbone, experience.train.x))
        self.on_device(backbone)

    def fit_keys(self, features: torch.Tensor) -> None:
        """The projections, from the run's seed, and each head's keys, by k-means on the projected ``features``
        (N, D) of unlabeled samples."""
        generator = torch.Generator().manual_seed(derive_seed(self.context.seed, 0xDCB))
        projection = torch.randn(self.heads, features.shape[1], self.key_dim, generator=generator)
        self.projection = F.normalize(projection, dim=1).to(features.device)
        projected = self.project(features)  # (C, N, d)
        self.codebook = torch.stack([kmeans(head, self.keys, self.kmeans_iterations, generator)
                                     for head in projected])

    def on_device(self, backbone: nn.Module) -> None:
        """Move the values (in place: the optimizer keeps the same parameter), keys and projections to the
        backbone's device."""
        device = next((p.device for p in backbone.parameters()), self.values.device)
        if self.values.device != device:
            self.values.data = self.values.data.to(device)
        assert self.projection is not None and self.codebook is not None
        self.projection, self.codebook = self.projection.to(device), self.codebook.to(device)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Each head's projection (C, N, d) of features (N, D)."""
        assert self.projection is not None
        return torch.einsum("nd,cdk->cnk", features, self.projection.to(features.dtype))

    def selected(self, features: torch.Tensor) -> torch.Tensor:
        """The indices (C, N, top) of each head's ``top`` nearest keys to features (N, D)."""
        assert self.codebook is not None
        distances = torch.cdist(self.project(features), self.codebook.to(features.dtype))  # (C, N, M)
        return distances.topk(self.top, dim=2, largest=False).indices

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The values alone: the encoder, the model's head, the projections and the keys never train."""
        scale = self.value_lr_scale if self.value_lr_scale is not None else float(self.heads * self.top)
        return [{"params": [self.values], "lr_scale": scale}]

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The mean of the values the nearest keys select (N, classes), masked to each sample's task classes;
        the model's own logits before the keys are fitted (the evaluation before any training)."""
        if self.codebook is None:
            return super().logits(model, x, task)
        features = as_tensor(extract_features(split_model(model)[0], x))  # (N, D), no gradient: frozen
        index = self.selected(features)  # (C, N, top)
        heads, count, top = index.shape
        values = self.values.gather(1, index.reshape(heads, count * top, 1).expand(-1, -1, self.n_classes))
        return self.mask_logits(values.view(heads, count, top, -1).mean(dim=(0, 2)), task)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "projection": self.projection, "codebook": self.codebook,
                "values": self.values.detach().clone()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.projection, self.codebook = state["projection"], state["codebook"]
        with torch.no_grad():
            self.values.data = state["values"].to(self.values.device).clone()
        if self.codebook is not None:
            self.on_device(split_model(model)[0])
