"""CODA-Prompt: decomposed attention-based prompting (Smith et al., CVPR 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.vit import PromptableBackbone
from lifelong.strategies.base import OWN_TENSORS, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.backbones import check_backbone_path
from lifelong.strategies.parts.features import restrict_to_classes
from lifelong.strategies.parts.prompts import PromptPool, check_layers, prefixes, query


def attention_weights(queries: torch.Tensor, keys: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """CODA-Prompt's component weights (B, M): the cosine similarity of each query (B, D), scaled
    feature-wise by each component's attention vector (M, D), with that component's key (M, D) (Eq. 4-5)."""
    attended = F.normalize(queries.unsqueeze(1) * attention, dim=-1)  # (B, M, D)
    return (attended * F.normalize(keys, dim=-1)).sum(-1)


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



@dataclass
class CODAPrompt(Strategy):
    """CODA-Prompt (Smith et al., CVPR 2023, "CODA-Prompt: COntinual Decomposed Attention-based Prompting
    for Rehearsal-Free Continual Learning").

    Every block of ``layers`` has a pool of ``pool_size`` prompt components (``prompt_length`` tokens),
    each with a key and an attention vector. A sample's prompt is the sum of the components weighted by
    :func:`attention_weights` of its query (the frozen backbone's class token), with no top-k choice, so
    the whole pipeline trains end to end. The prompt's first half is the key prefix, the second half the
    value prefix (prefix tuning). The pool is split evenly over the stream's tasks: task t trains its own
    components, keys and attention vectors; those of earlier tasks are used but frozen, later ones unused.
    A task's new components are initialised orthogonal to the earlier (learned) ones by Gram-Schmidt, and
    ``orthogonality`` weighs a penalty keeping the components, keys and attention vectors in use
    orthogonal. The head reads the class token.

    Departures: see :mod:`lifelong.strategies.parts.prompts`; the layers default to the first three blocks of
    the small ViT (the paper: 0-4 of 12); with more components than a key's dimension they cannot all be
    orthogonal, and each task's new ones are then orthogonal among themselves only
    (:func:`orthogonal_rows`); the prompts train with the run's optimizer and schedule (the reference code:
    Adam at 1e-3 with a cosine decay, rebuilt per task as here).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    backbone_path: str = ""
    """A ``torch.save``'d backbone (module or state dict) loaded before the first experience; empty:
    the model's own weights (e.g. from ``model.weights``)."""
    pool_size: Annotated[int, Ge(1)] = 100
    """Components per block, over all tasks (100 in the paper)."""
    prompt_length: Annotated[int, Ge(1)] = 8
    """Tokens per component, half key prefix and half value prefix (8 in the paper)."""
    layers: tuple[int, ...] = (0, 1, 2)
    """Blocks given the prompt (0-4 of 12 in the paper)."""
    orthogonality: Annotated[float, Ge(0)] = 0.0
    """Weight of the orthogonality penalty (the reference code's ``ortho_mu``, 0 in its CIFAR and
    ImageNet-R configurations, which rely on the orthogonal initialisation)."""
    prompts: PromptPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)
        if self.prompt_length % 2:
            raise ConfigError(f"strategy.prompt_length must be even (half keys, half values), got {self.prompt_length}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.prompts = PromptPool("coda_prompt", self.backbone_path, len(context.stream.experiences), self.create,
                                  self.trainable, self.features)

    def per_task(self) -> int:
        """Components each task adds."""
        count = self.pool_size // self.prompts.n_tasks
        if count < 1:
            raise ConfigError(f"strategy.pool_size ({self.pool_size}) must be at least the number of experiences "
                              f"({self.prompts.n_tasks})")
        return count

    def create(self, vit: PromptableBackbone) -> dict[str, torch.Tensor]:
        check_layers("layers", self.layers, vit.depth)
        count, layers, tasks = self.per_task(), len(self.layers), range(self.prompts.n_tasks)
        tensors = {f"components_{task}": torch.zeros(layers, count, self.prompt_length, vit.dim) for task in tasks}
        for kind in ("keys", "attention"):
            tensors.update({f"{kind}_{task}": torch.zeros(layers, count, vit.dim) for task in tasks})
        self.initialise(tensors, 0)
        return tensors

    def initialise(self, tensors: dict[str, torch.Tensor], task: int) -> None:
        """Draw task ``task``'s components, keys and attention vectors, orthogonal to the earlier tasks'."""
        with torch.no_grad():
            for kind in ("components", "keys", "attention"):
                for layer in range(len(self.layers)):
                    earlier = torch.cat([tensors[f"{kind}_{t}"][layer].flatten(1) for t in range(task)]) if task \
                        else tensors[f"{kind}_0"][layer].flatten(1)[:0]
                    new = tensors[f"{kind}_{task}"][layer]
                    new.copy_(orthogonal_rows(earlier.cpu(), len(new), self.generator).view_as(new))

    def trainable(self, task: int) -> list[str]:
        return [f"{kind}_{task}" for kind in ("components", "keys", "attention")]

    def in_use(self, kind: str) -> torch.Tensor:
        """The ``kind`` tensors of the tasks in use, concatenated over components (layers, M, ...)."""
        return torch.cat([self.prompts[f"{kind}_{task}"] for task in range(self.prompts.active_tasks())], dim=1)

    def features(self, vit: PromptableBackbone, x: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        queries = query(vit, x)  # (B, D)
        components, keys, attention = self.in_use("components"), self.in_use("keys"), self.in_use("attention")
        weights = torch.stack([attention_weights(queries, k, a) for k, a in zip(keys, attention, strict=True)],
                              dim=1)  # (B, layers, M)
        prompts = torch.einsum("blm,lmtd->bltd", weights, components)  # (B, layers, L, D)
        half = self.prompt_length // 2
        pairs = prompts.unflatten(2, (2, half))  # (B, layers, 2, L / 2, D): keys then values
        extra = queries.new_zeros(())
        if task is not None and self.orthogonality > 0:
            per_layer = [t.flatten(1) for kind in (components, keys, attention) for t in kind]  # (M, ...) each
            extra = self.orthogonality * sum(orthogonality_penalty(rows) for rows in per_layer)
        return vit(x, prefixes=prefixes(pairs, self.layers)), extra

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        return self.prompts.plan(experiences, index)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.prompts.before_experience(model, experience)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return self.prompts.parameter_groups(model)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.prompts.loss(model, batch, self.mask_logits)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.prompts.after_experience()
        if self.prompts.finished < self.prompts.n_tasks:  # the next task starts orthogonal to the learned components
            assert self.prompts.tensors is not None
            self.initialise(dict(self.prompts.tensors.items()), self.prompts.finished)

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.prompts.logits(model, x, task, self.mask_logits)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The prompted prediction among the classes seen (all classes before any training)."""
        return restrict_to_classes(self.logits(model, x, task), self.seen_classes).argmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.prompts.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        self.prompts.vit(model)  # the prompts are drawn before the generator's state is restored
        super().load_state_dict(state, model)
        self.prompts.load_state_dict(state)
