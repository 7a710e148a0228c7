"""A pool of prompts on a frozen Vision Transformer, and the key-query matching the prompt methods (L2P,
DualPrompt, CODA-Prompt) share: the frozen backbone queried without prompts, cosine matching of keys,
the surrogate pulling keys to their queries, prefixes for prefix tuning.

The prompts live in the strategy's :class:`PromptPool`, not in the model, so the model keeps the
architecture its configuration builds (and a checkpoint's model state loads strictly). They are an
``nn.ParameterDict``: the runner's optimizer receives them through the strategy's ``parameter_groups``,
they follow the model to its device at every use, and the strategy's state dict carries them for exact
resume. Each experience rebuilds the optimizer (as the papers' code does per task), so the groups always
hold exactly the prompts that experience trains; frozen prompts also stop requiring gradients.

The backbone is a :class:`~lifelong.models.vit.PromptableBackbone`: the library's ViT, or a Hugging Face ViT
(``model.name = "hf"``) whose attention the prompts reach through transformers' attention interface; any
other model, or a Hugging Face one whose attention they cannot reach, is refused in one line saying why.

Shared departures from the papers: the backbone is not ImageNet-pretrained but whatever the model
holds (pretrained by the library, loaded by ``model.weights``, or from ``backbone_path``); prompts are
inserted after the position embeddings and carry none; no batch-wise prompt voting at test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.vit import Prefix, PromptableBackbone
from lifelong.strategies.base import ExperiencePlan
from lifelong.strategies.parts.backbones import load_backbone
from lifelong.strategies.parts.features import restrict_to_classes

Mask = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""The strategy's masking of logits (B, C) to each sample's task classes, given the tasks (B,)."""
Features = Callable[[PromptableBackbone, torch.Tensor, int | None], tuple[torch.Tensor, torch.Tensor]]
"""A method's prompted features (B, D) of inputs ``x`` and its extra loss (a scalar), given the ViT and the
experience being trained (the task identity the papers use in training), None at test."""


def prompted_vit(model: nn.Module, strategy: str) -> tuple[PromptableBackbone, nn.Linear]:
    """The model's ViT backbone (the library's, or a Hugging Face ViT whose attention prompts reach) and
    linear head; a one-line :class:`ConfigError` for any other model, saying why."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if not isinstance(backbone, PromptableBackbone) or not isinstance(head, nn.Linear):
        raise ConfigError(f"strategy {strategy!r} prompts a Vision Transformer: set model.name='vit', or 'hf' with a "
                          f"ViT-style classifier (got a {type(backbone if backbone is not None else model).__name__})")
    refusal = backbone.prompt_refusal()
    if refusal:
        raise ConfigError(f"strategy {strategy!r} prompts a transformer's attention, and {refusal}; use a ViT-style "
                          "model (ViT, DeiT) or a method that needs no prompts (ncm, ranpac, lora)")
    return backbone, head


@torch.no_grad()
def query(vit: PromptableBackbone, x: torch.Tensor) -> torch.Tensor:
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


class PromptPool:
    """The prompts a method trains on a frozen ViT, and the method's progress through the stream.

    The method gives three functions: ``create``, the initial prompt tensors for a ViT (on the CPU, drawn
    from the strategy's generator; a :class:`ConfigError` when the settings do not fit the ViT);
    ``trainable``, the names of the tensors task t trains; ``features``, the prompted features
    (:data:`Features`). The pool does the rest: it makes the prompts at the first use, freezes the
    backbone (``requires_grad`` off from the first experience on, and out of the optimizer's groups, so it
    stays bit for bit as pretrained) while the head trains, and computes the training loss and the logits.

    Training logits are masked to the current experience's classes (the L2P/DualPrompt ``train_mask``
    and CODA-Prompt's masking of past classes), so a head row is trained only by its own classes'
    samples and the prompts never push old classes down."""

    def __init__(self, method: str, backbone_path: str, n_tasks: int,
                 create: Callable[[PromptableBackbone], dict[str, torch.Tensor]], trainable: Callable[[int], list[str]],
                 features: Features) -> None:
        self.method, self.backbone_path, self.n_tasks = method, backbone_path, n_tasks
        """The registry name (for error messages), the backbone file, and the stream's experiences."""
        self.create, self.trainable, self.features = create, trainable, features
        self.tensors: nn.ParameterDict | None = None
        self.finished = 0
        """Experiences trained so far."""
        self.training = False
        """True between ``before_experience`` and ``after_experience``."""
        self.current_classes: list[int] = []

    def __getitem__(self, key: str) -> nn.Parameter:
        assert self.tensors is not None, "the prompts are made at the first use of the model"
        return self.tensors[key]

    def active_tasks(self) -> int:
        """Tasks whose prompts are in use: those trained, and the one in training (at least one)."""
        return max(1, self.finished + self.training)

    def task(self) -> int:
        """The task whose prompts the current (or next) experience trains."""
        return min(self.finished, self.n_tasks - 1)

    def vit(self, model: nn.Module) -> tuple[PromptableBackbone, nn.Linear]:
        """The model's ViT and head; the prompts are made at the first call and moved to the model's device."""
        vit, head = prompted_vit(model, self.method)
        if self.tensors is None:
            self.tensors = nn.ParameterDict({k: nn.Parameter(v) for k, v in self.create(vit).items()})
        device = next(vit.parameters()).device
        if next(iter(self.tensors.values())).device != device:
            self.tensors.to(device)  # in place: the optimizer keeps the same parameters
        return vit, head

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Train on the experience with a fresh optimizer, holding only this experience's prompts (as the
        papers' code does per task), so the groups always hold exactly the prompts it trains."""
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Load the backbone before the first experience, freeze it, and train only this task's prompts."""
        if self.finished == 0 and self.backbone_path:
            load_backbone(prompted_vit(model, self.method)[0], self.backbone_path)
        vit, _ = self.vit(model)
        assert self.tensors is not None
        vit.requires_grad_(False)
        trained = set(self.trainable(self.task()))
        for key, parameter in self.tensors.items():
            parameter.requires_grad_(key in trained)
        self.training, self.current_classes = True, list(experience.classes)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The current experience's prompts and the head: the backbone stays as pretrained."""
        _, head = self.vit(model)
        return [{"params": [self[key] for key in self.trainable(self.task())] + list(head.parameters())}]

    def loss(self, model: nn.Module, batch: Batch, mask: Mask) -> torch.Tensor:
        """Cross-entropy on the current classes of the head on the features prompted for the task in
        training, plus the method's extra loss; ``mask`` restricts logits to each sample's task classes."""
        vit, head = self.vit(model)
        features, extra = self.features(vit, batch.x, self.task())
        logits = restrict_to_classes(mask(head(features), batch.task), self.current_classes)
        return F.cross_entropy(logits, batch.y) + extra

    def after_experience(self) -> None:
        self.finished += 1
        self.training = False

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor, mask: Mask) -> torch.Tensor:
        """The head on the prompted features chosen without task identity (B, C), masked by ``mask``."""
        vit, head = self.vit(model)
        return mask(head(self.features(vit, x, None)[0]), task)

    def state_dict(self) -> dict[str, Any]:
        prompts = {} if self.tensors is None else {k: v.detach().clone() for k, v in self.tensors.items()}
        return {"prompts": prompts, "finished": self.finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the prompts, which :meth:`vit` must have made first (before the strategy's generator
        is restored, as in the run that saved them)."""
        with torch.no_grad():
            for key, value in state["prompts"].items():
                self[key].copy_(value)
        self.finished = int(state["finished"])
