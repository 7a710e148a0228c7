"""DualPrompt: complementary prompting (Wang et al., ECCV 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lifelong.errors import ConfigError
from lifelong.models.vit import VisionTransformer
from lifelong.strategies.base import OWN_TENSORS, Capabilities
from lifelong.strategies.prompts import (
    PromptStrategy,
    check_layers,
    check_positive,
    cosine,
    prefixes,
    pull_loss,
    query,
    uniform,
)


@dataclass
class DualPrompt(PromptStrategy):
    """DualPrompt (Wang et al., ECCV 2022, "DualPrompt: Complementary Prompting for Rehearsal-free
    Continual Learning").

    A G(eneral)-prompt shared by all tasks is given to the blocks ``g_layers``, and one E(xpert)-prompt
    per task, with a key, to the blocks ``e_layers``, both by prefix tuning (each prompt is a key and a
    value prefix of its length). In training the experience's own E-prompt is used (the task identity
    the paper trains with) and its key is pulled towards the queries (the frozen backbone's class token)
    with weight ``pull_weight``; at test each sample takes the E-prompt whose key is most cosine-similar
    to its query. The head reads the class token. Only the G-prompt, the current E-prompt and key, and the
    head train.

    Departures: see :mod:`lifelong.strategies.prompts`; the layers default to the first blocks of the
    small ViT (the paper: G at blocks 0-1, E at 2-4 of 12); the E-prompt pool holds one prompt per
    experience of the stream, and at test only the keys of the tasks trained so far compete (the
    reference also lets untrained keys be chosen).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    method: ClassVar[str] = "dualprompt"

    g_layers: tuple[int, ...] = (0, 1)
    """Blocks given the G-prompt (0-1 in the paper)."""
    e_layers: tuple[int, ...] = (2, 3)
    """Blocks given the E-prompt (2-4 of 12 in the paper)."""
    g_length: int = 5
    """Tokens of the G-prompt's key and of its value prefix (5 in the reference code)."""
    e_length: int = 5
    """Tokens of each E-prompt's key and of its value prefix (5 in the reference code)."""
    pull_weight: float = 1.0
    """Weight of the key-query matching loss (1 in the reference code)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(g_length=self.g_length, e_length=self.e_length)
        if self.pull_weight < 0:
            raise ConfigError(f"strategy.pull_weight must be >= 0, got {self.pull_weight}")
        if set(self.g_layers) & set(self.e_layers):
            raise ConfigError(f"strategy.g_layers {list(self.g_layers)} and strategy.e_layers "
                              f"{list(self.e_layers)} must not share a block")

    def create(self, vit: VisionTransformer) -> dict[str, torch.Tensor]:
        check_layers("g_layers", self.g_layers, vit.depth)
        check_layers("e_layers", self.e_layers, vit.depth)
        tensors = {"g_prompt": uniform(self.generator, len(self.g_layers), 2, self.g_length, vit.dim)}
        for task in range(self.n_tasks):
            tensors[f"e_prompt_{task}"] = uniform(self.generator, len(self.e_layers), 2, self.e_length, vit.dim)
            tensors[f"e_key_{task}"] = uniform(self.generator, vit.dim)
        return tensors

    def trainable(self) -> list[str]:
        return ["g_prompt", f"e_prompt_{self.task()}", f"e_key_{self.task()}"]

    def keys(self) -> torch.Tensor:
        """The keys (T, D) of the tasks in use."""
        assert self.prompts is not None
        return torch.stack([self.prompts[f"e_key_{task}"] for task in range(self.active_tasks())])

    def choose(self, queries: torch.Tensor) -> torch.Tensor:
        """The task (B,) whose key is most cosine-similar to each query (B, D)."""
        return cosine(queries, self.keys()).argmax(dim=1)

    def features(self, vit: VisionTransformer, x: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.prompts is not None
        queries = query(vit, x)  # (B, D)
        batch = len(x)
        if task is None:
            chosen = self.choose(queries)  # (B,)
            e_prompts = torch.stack([self.prompts[f"e_prompt_{t}"] for t in range(self.active_tasks())])[chosen]
            extra = queries.new_zeros(())
        else:
            e_prompts = self.prompts[f"e_prompt_{task}"].expand(batch, -1, -1, -1, -1)
            extra = self.pull_weight * pull_loss(queries, self.prompts[f"e_key_{task}"].expand(batch, 1, -1))
        g_prompt = self.prompts["g_prompt"].expand(batch, -1, -1, -1, -1)  # (B, layers, 2, L_g, D)
        layers = {**prefixes(g_prompt, self.g_layers), **prefixes(e_prompts, self.e_layers)}
        return vit(x, prefixes=layers), extra
