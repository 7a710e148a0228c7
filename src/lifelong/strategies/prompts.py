"""What the prompt methods (L2P, DualPrompt, CODA-Prompt) share: a frozen Vision Transformer queried
without prompts, key-query matching, prompt tensors owned by the strategy, and the training loss.

The prompts live in the strategy, not in the model, so the model keeps the architecture its
configuration builds (and a checkpoint's model state loads strictly). They are an ``nn.ParameterDict``:
the runner's optimizer receives them through :meth:`PromptStrategy.parameter_groups`, they follow the
model to its device at every use, and :meth:`PromptStrategy.state_dict` carries them for exact resume.
Each experience rebuilds the optimizer (as the papers' code does per task), so the groups always hold
exactly the prompts that experience trains; frozen prompts also stop requiring gradients.

Shared departures from the papers: the backbone is not ImageNet-pretrained but whatever the model
holds (pretrained by the library, loaded by ``model.weights``, or from ``backbone_path``); prompts are
inserted after the position embeddings and carry none; no batch-wise prompt voting at test.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.vit import Prefix, VisionTransformer
from lifelong.strategies.base import ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.backbones import check_backbone_path, load_backbone
from lifelong.strategies.parts.features import restrict_to_classes


def prompted_vit(model: nn.Module, strategy: str) -> tuple[VisionTransformer, nn.Linear]:
    """The model's ViT backbone and linear head; a :class:`ConfigError` for any other model."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if not isinstance(backbone, VisionTransformer) or not isinstance(head, nn.Linear):
        raise ConfigError(f"strategy {strategy!r} prompts a Vision Transformer: set model.name='vit' "
                          f"(got a {type(backbone if backbone is not None else model).__name__})")
    return backbone, head


@torch.no_grad()
def query(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The query features (B, D): the frozen backbone's class token without any prompt."""
    return vit(x)


def cosine(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B, M) of every query (B, D) with every key (M, D)."""
    return F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T


def select_prompts(queries: torch.Tensor, keys: torch.Tensor, top: int) -> torch.Tensor:
    """Indices (B, top) of the ``top`` keys (M, D) most cosine-similar to each query (B, D), best first
    (L2P's matching, Wang et al. 2022, Eq. 3)."""
    return cosine(queries, keys).topk(top, dim=1).indices


def pull_loss(queries: torch.Tensor, selected_keys: torch.Tensor) -> torch.Tensor:
    """The surrogate loss pulling the selected keys (B, K, D) towards their queries (B, D): minus the
    cosine similarity, summed over the K keys and averaged over the batch (L2P Eq. 5, DualPrompt Eq. 4)."""
    similarity = (F.normalize(selected_keys, dim=-1) * F.normalize(queries, dim=-1).unsqueeze(1)).sum(-1)
    return -similarity.sum(1).mean()


def prefixes(pairs: torch.Tensor, layers: Sequence[int]) -> dict[int, Prefix]:
    """Per-block prefixes from ``pairs`` (B, len(layers), 2, L, D): index 0 the keys, 1 the values."""
    return {layer: Prefix(pairs[:, i, 0], pairs[:, i, 1]) for i, layer in enumerate(layers)}


def uniform(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """U(-1, 1) draws: the prompt and key initialisation of the L2P and DualPrompt code."""
    return torch.rand(*shape, generator=generator) * 2 - 1


def check_layers(name: str, layers: Sequence[int], depth: int) -> None:
    """Raise unless ``layers`` are distinct block indices of a ViT of ``depth`` blocks."""
    if len(set(layers)) != len(layers) or any(not 0 <= layer < depth for layer in layers):
        raise ConfigError(f"strategy.{name} must be distinct block indices in [0, {depth}) of the ViT, "
                          f"got {list(layers)}")


@dataclass
class PromptStrategy(Strategy):
    """Abstract: a frozen ViT, prompts owned by the strategy, cross-entropy on the current classes plus
    the method's own loss, prediction among the classes seen.

    The backbone is frozen by the strategy itself (``requires_grad`` off from the first experience on,
    and out of the optimizer's groups), so it stays bit for bit as pretrained; the head trains.

    Training logits are masked to the current experience's classes (the L2P/DualPrompt ``train_mask``
    and CODA-Prompt's masking of past classes), so a head row is trained only by its own classes'
    samples and the prompts never push old classes down."""

    backbone_path: str = ""
    """A ``torch.save``'d backbone (module or state dict) loaded before the first experience; empty:
    the model's own weights (e.g. from ``model.weights``)."""
    prompts: nn.ParameterDict | None = field(default=None, init=False, repr=False)
    finished: int = field(default=0, init=False, repr=False)
    """Experiences trained so far."""
    training: bool = field(default=False, init=False, repr=False)
    """True between ``before_experience`` and ``after_experience``."""
    n_tasks: int = field(default=1, init=False, repr=False)
    current_classes: list[int] = field(default_factory=list, init=False, repr=False)

    method: ClassVar[str]
    """The registry name, for error messages."""

    def __post_init__(self) -> None:
        check_backbone_path(self.backbone_path)

    @abstractmethod
    def create(self, vit: VisionTransformer) -> dict[str, torch.Tensor]:
        """The initial prompt tensors (on the CPU, drawn from ``self.generator``) for ``vit``; raises a
        :class:`ConfigError` when the settings do not fit it."""

    @abstractmethod
    def trainable(self) -> list[str]:
        """Names of the prompt tensors the current experience trains."""

    @abstractmethod
    def features(self, vit: VisionTransformer, x: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompted features (B, D) of ``x`` and the method's extra loss (a scalar); ``task`` is the
        experience being trained (the task identity the papers use in training), None at test."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.prompts, self.finished, self.training = None, 0, False
        self.n_tasks, self.current_classes = len(context.stream.experiences), []

    def active_tasks(self) -> int:
        """Tasks whose prompts are in use: those trained, and the one in training (at least one)."""
        return max(1, self.finished + self.training)

    def task(self) -> int:
        """The task whose prompts the current (or next) experience trains."""
        return min(self.finished, self.n_tasks - 1)

    def vit(self, model: nn.Module) -> tuple[VisionTransformer, nn.Linear, nn.ParameterDict]:
        """The model's ViT and head, and the prompts, made at the first call and moved to the model's device."""
        vit, head = prompted_vit(model, self.method)
        if self.prompts is None:
            self.prompts = nn.ParameterDict({k: nn.Parameter(v) for k, v in self.create(vit).items()})
        device = vit.cls_token.device
        if next(iter(self.prompts.values())).device != device:
            self.prompts.to(device)  # in place: the optimizer keeps the same parameters
        return vit, head, self.prompts

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Train on the experience with a fresh optimizer, holding only this experience's prompts."""
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        if self.finished == 0 and self.backbone_path:
            load_backbone(prompted_vit(model, self.method)[0], self.backbone_path)
        vit, _, prompts = self.vit(model)
        vit.requires_grad_(False)
        trained = set(self.trainable())
        for key, parameter in prompts.items():
            parameter.requires_grad_(key in trained)
        self.training, self.current_classes = True, list(experience.classes)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The current experience's prompts and the head: the backbone stays as pretrained."""
        _, head, prompts = self.vit(model)
        return [{"params": [prompts[key] for key in self.trainable()] + list(head.parameters())}]

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        vit, head, _ = self.vit(model)
        features, extra = self.features(vit, batch.x, self.task())
        logits = restrict_to_classes(self.mask_logits(head(features), batch.task), self.current_classes)
        return F.cross_entropy(logits, batch.y) + extra

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.finished += 1
        self.training = False

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The head on the prompted features chosen without task identity (B, C)."""
        vit, head, _ = self.vit(model)
        return self.mask_logits(head(self.features(vit, x, None)[0]), task)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The prompted prediction among the classes seen (all classes before any training)."""
        return restrict_to_classes(self.logits(model, x, task), self.seen_classes).argmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        prompts = {} if self.prompts is None else {k: v.detach().clone() for k, v in self.prompts.items()}
        return {**super().state_dict(), "prompts": prompts, "finished": self.finished}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        _, _, prompts = self.vit(model)  # made before the generator's state is restored
        super().load_state_dict(state, model)
        with torch.no_grad():
            for key, value in state["prompts"].items():
                prompts[key].copy_(value)
        self.finished = int(state["finished"])


def orthogonal_rows(earlier: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` unit rows (count, F), orthogonal to each other and to the rows of ``earlier`` (k, F) as
    far as the dimension allows: CODA-Prompt's Gram-Schmidt initialisation of new components. When
    k + count > F, the new rows are orthogonal among themselves only (or just unit rows, count > F)."""
    dimension = earlier.shape[1]
    rows = torch.randn(count, dimension, generator=generator, dtype=earlier.dtype)
    if len(earlier) and len(earlier) + count <= dimension:
        basis = torch.linalg.qr(earlier.T).Q  # (F, k), orthonormal basis of the earlier rows
        rows = rows - rows @ basis @ basis.T
    if count <= dimension:
        rows = torch.linalg.qr(rows.T).Q.T  # (count, F) orthonormal
    return F.normalize(rows, dim=1)


def orthogonality_penalty(rows: torch.Tensor) -> torch.Tensor:
    """Mean squared deviation of the rows' Gram matrix (n, F) from the identity (CODA-Prompt Eq. 8)."""
    return (rows @ rows.T - torch.eye(len(rows), dtype=rows.dtype, device=rows.device)).pow(2).mean()


def check_positive(**settings: float) -> None:
    """Raise for the first setting that is not > 0."""
    for key, value in settings.items():
        if not value > 0:
            raise ConfigError(f"strategy.{key} must be > 0, got {value}")

