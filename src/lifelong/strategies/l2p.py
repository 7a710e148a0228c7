"""L2P: Learning to Prompt (Wang et al., CVPR 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.vit import PromptableBackbone
from lifelong.strategies.base import OWN_TENSORS, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.backbones import check_backbone_path
from lifelong.strategies.parts.features import restrict_to_classes
from lifelong.strategies.parts.prompts import PromptPool, pull_loss, query, select_prompts, uniform


@dataclass
class L2P(Strategy):
    """Learning to Prompt (Wang et al., CVPR 2022, "Learning to Prompt for Continual Learning").

    A pool of ``pool_size`` prompts of ``prompt_length`` tokens, each with a key. The frozen backbone's
    class token (no prompts) is the query; the ``top`` keys most cosine-similar to it choose the prompts,
    which are prepended (after the class token) to the patch tokens; the head reads the mean of the
    prompt tokens' outputs (the reference code's ``head_type='prompt'``). The loss is cross-entropy on the
    current classes plus ``pull_weight`` times the surrogate pulling the chosen keys to their queries.
    Only the pool, the keys and the head train; the backbone is frozen and no sample is stored.

    Departures: see :mod:`lifelong.strategies.parts.prompts` (no ImageNet weights, prompts without position
    embeddings, no batch-wise prompt voting at test); the whole pool is in one parameter group
    (the reference trains it with Adam at a constant rate, here the run's optimizer and schedule apply).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    backbone_path: str = ""
    """A ``torch.save``'d backbone (module or state dict) loaded before the first experience; empty:
    the model's own weights (e.g. from ``model.weights``)."""
    pool_size: Annotated[int, Ge(1)] = 10
    """Prompts in the pool (M = 10 in the paper)."""
    prompt_length: Annotated[int, Ge(1)] = 5
    """Tokens per prompt (L_p = 5)."""
    top: Annotated[int, Ge(1)] = 5
    """Prompts chosen per sample (N = 5)."""
    pull_weight: Annotated[float, Ge(0)] = 0.1
    """Weight of the key-query surrogate loss (lambda, 0.1 in the reference code)."""
    prompts: PromptPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)
        if self.top > self.pool_size:
            raise ConfigError(f"strategy.top ({self.top}) must be at most strategy.pool_size ({self.pool_size})")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.prompts = PromptPool("l2p", self.backbone_path, len(context.stream.experiences), self.create,
                                  lambda task: ["pool", "pool_keys"], self.features)

    def create(self, vit: PromptableBackbone) -> dict[str, torch.Tensor]:
        return {"pool": uniform(self.generator, self.pool_size, self.prompt_length, vit.dim),
                "pool_keys": uniform(self.generator, self.pool_size, vit.dim)}

    def features(self, vit: PromptableBackbone, x: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        pool, keys = self.prompts["pool"], self.prompts["pool_keys"]
        queries = query(vit, x)  # (B, D)
        chosen = select_prompts(queries, keys, self.top)  # (B, N)
        prompts = pool[chosen].flatten(1, 2)  # (B, N * L_p, D)
        tokens = vit.tokens(x, prompts=prompts)  # (B, 1 + N * L_p + patches, D)
        features = tokens[:, 1:1 + prompts.shape[1]].mean(dim=1)
        return features, self.pull_weight * pull_loss(queries, keys[chosen])

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
