"""L2P: Learning to Prompt (Wang et al., CVPR 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lifelong.errors import ConfigError
from lifelong.models.vit import VisionTransformer
from lifelong.strategies.base import OWN_TENSORS, Capabilities
from lifelong.strategies.prompts import (
    PromptStrategy,
    check_positive,
    pull_loss,
    query,
    select_prompts,
    uniform,
)


@dataclass
class L2P(PromptStrategy):
    """Learning to Prompt (Wang et al., CVPR 2022, "Learning to Prompt for Continual Learning").

    A pool of ``pool_size`` prompts of ``prompt_length`` tokens, each with a key. The frozen backbone's
    class token (no prompts) is the query; the ``top`` keys most cosine-similar to it choose the prompts,
    which are prepended (after the class token) to the patch tokens; the head reads the mean of the
    prompt tokens' outputs (the reference code's ``head_type='prompt'``). The loss is cross-entropy on the
    current classes plus ``pull_weight`` times the surrogate pulling the chosen keys to their queries.
    Only the pool, the keys and the head train; the backbone is frozen and no sample is stored.

    Departures: see :mod:`lifelong.strategies.prompts` (no ImageNet weights, prompts without position
    embeddings, no batch-wise prompt voting at test); the whole pool is in one parameter group
    (the reference trains it with Adam at a constant rate, here the run's optimizer and schedule apply).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    method: ClassVar[str] = "l2p"

    pool_size: int = 10
    """Prompts in the pool (M = 10 in the paper)."""
    prompt_length: int = 5
    """Tokens per prompt (L_p = 5)."""
    top: int = 5
    """Prompts chosen per sample (N = 5)."""
    pull_weight: float = 0.1
    """Weight of the key-query surrogate loss (lambda, 0.1 in the reference code)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(pool_size=self.pool_size, prompt_length=self.prompt_length, top=self.top)
        if self.top > self.pool_size:
            raise ConfigError(f"strategy.top ({self.top}) must be at most strategy.pool_size ({self.pool_size})")
        if self.pull_weight < 0:
            raise ConfigError(f"strategy.pull_weight must be >= 0, got {self.pull_weight}")

    def create(self, vit: VisionTransformer) -> dict[str, torch.Tensor]:
        return {"pool": uniform(self.generator, self.pool_size, self.prompt_length, vit.dim),
                "pool_keys": uniform(self.generator, self.pool_size, vit.dim)}

    def trainable(self) -> list[str]:
        return ["pool", "pool_keys"]

    def features(self, vit: VisionTransformer, x: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.prompts is not None
        pool, keys = self.prompts["pool"], self.prompts["pool_keys"]
        queries = query(vit, x)  # (B, D)
        chosen = select_prompts(queries, keys, self.top)  # (B, N)
        prompts = pool[chosen].flatten(1, 2)  # (B, N * L_p, D)
        tokens = vit.tokens(x, prompts=prompts)  # (B, 1 + N * L_p + patches, D)
        features = tokens[:, 1:1 + prompts.shape[1]].mean(dim=1)
        return features, self.pull_weight * pull_loss(queries, keys[chosen])
