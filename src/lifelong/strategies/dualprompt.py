"""DualPrompt: complementary prompting (Wang et al., ECCV 2022)."""

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
from lifelong.strategies.parts.prompts import (
    PromptPool,
    check_layers,
    cosine,
    prefixes,
    pull_loss,
    query,
    uniform,
)


@dataclass
class DualPrompt(Strategy):
    """DualPrompt (Wang et al., ECCV 2022, "DualPrompt: Complementary Prompting for Rehearsal-free
    Continual Learning").

    A G(eneral)-prompt shared by all tasks is given to the blocks ``g_layers``, and one E(xpert)-prompt
    per task, with a key, to the blocks ``e_layers``, both by prefix tuning (each prompt is a key and a
    value prefix of its length). In training the experience's own E-prompt is used (the task identity
    the paper trains with) and its key is pulled towards the queries (the frozen backbone's class token)
    with weight ``pull_weight``; at test each sample takes the E-prompt whose key is most cosine-similar
    to its query. The head reads the class token. Only the G-prompt, the current E-prompt and key, and the
    head train. As in the reference code (``shared_prompt_pool``), each new task's E-prompt starts as a copy
    of the previous task's, learned one; its key starts fresh (the reference's ``shared_prompt_key`` off).

    Departures: see :mod:`lifelong.strategies.parts.prompts`; the layers default to the first blocks of the
    small ViT (the paper: G at blocks 0-1, E at 2-4 of 12); the E-prompt pool holds one prompt per
    experience of the stream (the reference: 10, one per task of its benchmarks), and at test only the keys
    of the tasks trained so far compete (the reference also lets untrained keys be chosen); the prompts
    train with the run's optimizer and schedule (the reference: Adam at a constant 0.03 x 24 / 256 for
    batches of 24, rebuilt per task as here).
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(averaging=frozenset(), averaging_refusal=OWN_TENSORS)

    backbone_path: str = ""
    """A ``torch.save``'d backbone (module or state dict) loaded before the first experience; empty:
    the model's own weights (e.g. from ``model.weights``)."""
    g_layers: tuple[int, ...] = (0, 1)
    """Blocks given the G-prompt (0-1 in the paper)."""
    e_layers: tuple[int, ...] = (2, 3)
    """Blocks given the E-prompt (2-4 of 12 in the paper)."""
    g_length: Annotated[int, Ge(1)] = 5
    """Tokens of the G-prompt's key and of its value prefix (5 in the reference code)."""
    e_length: Annotated[int, Ge(1)] = 5
    """Tokens of each E-prompt's key and of its value prefix (5 in the reference code)."""
    pull_weight: Annotated[float, Ge(0)] = 1.0
    """Weight of the key-query matching loss (1 in the reference code)."""
    shared_prompt_pool: bool = True
    """Start each task's E-prompt as a copy of the previous task's (the reference's default); False: from
    its own U(-1, 1) draw."""
    prompts: PromptPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)
        if set(self.g_layers) & set(self.e_layers):
            raise ConfigError(f"strategy.g_layers {list(self.g_layers)} and strategy.e_layers "
                              f"{list(self.e_layers)} must not share a block")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.prompts = PromptPool("dualprompt", self.backbone_path, len(context.stream.experiences), self.create,
                                  self.trainable, self.features)

    def create(self, vit: PromptableBackbone) -> dict[str, torch.Tensor]:
        check_layers("g_layers", self.g_layers, vit.depth)
        check_layers("e_layers", self.e_layers, vit.depth)
        tensors = {"g_prompt": uniform(self.generator, len(self.g_layers), 2, self.g_length, vit.dim)}
        for task in range(self.prompts.n_tasks):
            tensors[f"e_prompt_{task}"] = uniform(self.generator, len(self.e_layers), 2, self.e_length, vit.dim)
            tensors[f"e_key_{task}"] = uniform(self.generator, vit.dim)
        return tensors

    def trainable(self, task: int) -> list[str]:
        return ["g_prompt", f"e_prompt_{task}", f"e_key_{task}"]

    def keys(self) -> torch.Tensor:
        """The keys (T, D) of the tasks in use."""
        return torch.stack([self.prompts[f"e_key_{task}"] for task in range(self.prompts.active_tasks())])

    def choose(self, queries: torch.Tensor) -> torch.Tensor:
        """The task (B,) whose key is most cosine-similar to each query (B, D)."""
        return cosine(queries, self.keys()).argmax(dim=1)

    def features(self, vit: PromptableBackbone, x: torch.Tensor, task: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        queries = query(vit, x)  # (B, D)
        batch = len(x)
        if task is None:
            chosen = self.choose(queries)  # (B,)
            e_prompts = torch.stack([self.prompts[f"e_prompt_{t}"]
                                     for t in range(self.prompts.active_tasks())])[chosen]
            extra = queries.new_zeros(())
        else:
            e_prompts = self.prompts[f"e_prompt_{task}"].expand(batch, -1, -1, -1, -1)
            extra = self.pull_weight * pull_loss(queries, self.prompts[f"e_key_{task}"].expand(batch, 1, -1))
        g_prompt = self.prompts["g_prompt"].expand(batch, -1, -1, -1, -1)  # (B, layers, 2, L_g, D)
        layers = {**prefixes(g_prompt, self.g_layers), **prefixes(e_prompts, self.e_layers)}
        return vit(x, prefixes=layers), extra

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
        finished = self.prompts.finished
        if self.shared_prompt_pool and finished < self.prompts.n_tasks:  # the next task starts from this one's
            with torch.no_grad():
                self.prompts[f"e_prompt_{finished}"].copy_(self.prompts[f"e_prompt_{finished - 1}"])

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
