"""Proxy-based contrastive replay: PCR and HPCR, one method registered twice.

HPCR (Lin et al. 2024) is PCR (Lin et al., CVPR 2023) with a loss scale that moves over the experience (its
temperature component) and two distillation terms; PCR is HPCR with the scale fixed at 1 and both
distillation weights at 0. One definition, :func:`proxy_contrastive_replay`, makes both classes: PCR's
copies of HPCR's settings are constants, not settings (``strategy.logit_distillation`` is refused for
``pcr``), as DER's ``beta`` is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt, check_ordered
from lifelong.data.streams import Batch, Experience
from lifelong.models.nets import split_model
from lifelong.strategies.base import Strategy, StrategyContext, named_variant
from lifelong.strategies.parts.contrastive import (
    cosine_logits,
    proxy_contrastive_loss,
    similarity_distillation,
    views,
)
from lifelong.strategies.parts.features import restrict_to_classes
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


def constant(value: float) -> Any:
    """A field of HPCR's that PCR fixes: ``value``, not a setting."""
    return field(default=value, init=False, repr=False)


def proxy_contrastive_replay(name: str, doc: str, holistic: dict[str, Any]) -> type[Strategy]:
    """The class ``name`` of proxy-based contrastive replay, HPCR's fields declared as ``holistic`` says:
    defaults (settings, HPCR) or :func:`constant` fields (PCR)."""

    @dataclass
    class ProxyContrastiveReplay(Strategy):
        buffer_size: BufferSize = 200
        replay_batch_size: ReplayBatchSize = 0
        memory_keeps: MemoryKeeps = "samples"
        memory_budget_bytes: MemoryBudget = 0
        temperature: Annotated[float, Gt(0)] = 0.09
        """``tau`` of the anchor-to-proxy similarities ``cos / tau`` (0.09 in the authors' code); the same
        ``tau`` divides the similarities of HPCR's sample-based distillation."""
        gradient_scale_min: Annotated[float, Gt(0)] = holistic["gradient_scale_min"]
        """HPCR's temperature component, the lowest value of the factor on the contrastive loss (0.5625):
        ``tau`` inside the softmax shapes the probabilities, a second temperature ``tau_g`` only scales the
        gradient, by ``tau / tau_g``; ``tau_g`` from 0.16 down to 0.05 gives factors 0.5625 to 1.8."""
        gradient_scale_max: Annotated[float, Gt(0)] = holistic["gradient_scale_max"]
        """The highest value of the factor (1.8, ``tau / 0.05``)."""
        gradient_scale_period: Annotated[int, Ge(1)] = holistic["gradient_scale_period"]
        """Steps of one cosine cycle of the factor, from the lowest value up and back, restarted at each
        experience (500 in the authors' code)."""
        logit_distillation: Annotated[float, Ge(0)] = holistic["logit_distillation"]
        """HPCR's proxy-based distillation weight ``alpha``: the mean squared error between a replayed sample's
        current logits and those it had when it entered the memory, on the batch's classes (0.1; 0.01 for
        CIFAR-10 in the authors' runs)."""
        similarity_distillation: Annotated[float, Ge(0)] = holistic["similarity_distillation"]
        """HPCR's sample-based distillation weight ``beta`` (:func:`~lifelong.strategies.parts.contrastive.
        similarity_distillation`; 0.5)."""
        memory: ReservoirMemory = field(init=False, repr=False)
        step: int = field(default=0, init=False, repr=False)
        """Steps taken in the current experience (the factor's position)."""
        classes: list[int] = field(default_factory=list, init=False, repr=False)
        """The classes trained so far, the current experience's included: the classes predicted."""

        def __post_init__(self) -> None:
            super().__post_init__()
            check_memory_keeps(self.memory_keeps)
            check_ordered("strategy", self, "gradient_scale_min", "gradient_scale_max")

        def setup(self, context: StrategyContext) -> None:
            super().setup(context)
            self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)
            self.step, self.classes = 0, []

        def before_experience(self, model: nn.Module, experience: Experience) -> None:
            self.step = 0
            self.classes = sorted(set(self.seen_classes) | set(experience.classes))

        def gradient_scale(self) -> float:
            """The factor on the contrastive loss at this step: a cosine from the lowest value to the highest
            and back over each period."""
            wave = 0.5 * (1 - math.cos(2 * math.pi * self.step / self.gradient_scale_period))
            return self.gradient_scale_min + (self.gradient_scale_max - self.gradient_scale_min) * wave

        def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
            backbone, head = split_model(model)
            augment = self.context.replay_augment
            x = views(batch.x, batch.stored, augment)  # (V B, ...): the new samples, in one or two views
            y = batch.y.repeat(len(x) // len(batch.y))
            new = len(y)
            replay = self.memory.sample(self.replay_batch_size or len(batch.y)) if len(self.memory) else None
            if replay is not None:  # one forward pass for the new and the replayed samples
                replayed = views(self.as_replayed(replay)["x"], replay["x"], augment)  # (V R, ...)
                x, y = torch.cat([x, replayed]), torch.cat([y, replay["y"].repeat(len(replayed) // len(replay["y"]))])
            features = backbone(x)  # (N, D)
            logits = cosine_logits(features, head, 1 / self.temperature)  # (N, C)
            loss = self.gradient_scale() * proxy_contrastive_loss(logits, y)
            if replay is not None and self.seen_classes:  # HPCR distils from the second experience on
                loss = loss + self.distillation(features[new:], logits[new:], y, replay)
            kept = {"logits": logits[: len(batch.y)].detach()} if self.logit_distillation else {}
            if self.similarity_distillation:
                kept["features"] = features[: len(batch.y)].detach()
            self.memory.remember(batch, **kept)
            self.step += 1
            return loss

        def distillation(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                         replay: dict[str, torch.Tensor]) -> torch.Tensor:
            """HPCR's distillation of the replayed samples' ``features`` (V R, D) and ``logits`` (V R, C) towards
            what they gave when they entered the memory (``replay``'s rows, R); ``labels`` (N,): the classes of
            the whole batch, new samples included, whose logit columns are distilled (one column per sample, as
            in the authors' code)."""
            repeats = len(features) // len(replay["y"])  # the views
            loss = features.new_zeros(())
            if self.logit_distillation:
                stored = replay["logits"].repeat(repeats, 1)  # (V R, C)
                loss = loss + self.logit_distillation * F.mse_loss(logits[:, labels], stored[:, labels])
            if self.similarity_distillation:
                stored = replay["features"].repeat(repeats, 1)  # (V R, D)
                loss = loss + self.similarity_distillation * similarity_distillation(features, stored,
                                                                                     self.temperature)
            return loss

        @torch.no_grad()
        def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
            """The class of the most similar proxy among the classes trained so far (the authors' code masks
            the others): a proxy no sample has pulled yet points anywhere."""
            backbone, head = split_model(model)
            logits = self.mask_logits(cosine_logits(backbone(x), head, 1 / self.temperature), task)
            return restrict_to_classes(logits, self.classes).argmax(dim=1)

        def memory_size(self) -> int:
            return len(self.memory)

        def state_dict(self) -> dict[str, Any]:
            return {**super().state_dict(), "buffer": self.memory.state_dict(), "step": self.step,
                    "classes": list(self.classes)}

        def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
            super().load_state_dict(state, model)
            self.memory.load_state_dict(state["buffer"])
            self.step, self.classes = int(state["step"]), list(state["classes"])

    return named_variant(ProxyContrastiveReplay, name, doc)


DEPARTURES = """Departures from the authors' code (github.com/FelixHuiweiLin/PCR): the second, augmented view of every
    sample (their crops, flips, colour jitter and greyscale) exists only when the run augments replayed samples
    (``[augment]`` with ``replay = true``: the run's crops and flips); without it each sample is one anchor. The
    proxies are the rows of the model's own linear head (its bias unused), not those of a second, bias-free
    cosine head beside it. The new and the replayed samples go through the model in one pass (their
    normalization layers see one batch, not two). The first step, before the memory holds anything, learns
    from the new samples alone, where their code takes no step."""

PCR = proxy_contrastive_replay(
    "PCR", holistic={"gradient_scale_min": constant(1.0), "gradient_scale_max": constant(1.0),
                     "gradient_scale_period": constant(1), "logit_distillation": constant(0.0),
                     "similarity_distillation": constant(0.0)},
    doc=f"""Proxy-based contrastive replay (Lin et al., CVPR 2023, "PCR: Proxy-based Contrastive Replay for Online
    Class-Incremental Continual Learning"). Each sample of the new and the replayed batch (a reservoir memory)
    is an anchor contrasted with the proxies, the head's normalized class weights, of the classes in that
    batch only, each counted once per sample of it (:func:`~lifelong.strategies.parts.contrastive.
    proxy_contrastive_loss`); there is no other loss. Like a proxy-based loss it converges fast; like a
    contrastive one it never pushes down the classes absent from the batch, so the many new samples do not
    drag the old proxies away. Prediction is the nearest proxy in cosine among the classes trained so far.

    {DEPARTURES}""")
HPCR = proxy_contrastive_replay(
    "HPCR", holistic={"gradient_scale_min": 0.5625, "gradient_scale_max": 1.8, "gradient_scale_period": 500,
                      "logit_distillation": 0.1, "similarity_distillation": 0.5},
    doc=f"""Holistic proxy-based contrastive replay (Lin et al., IEEE TNNLS 2025, "HPCR: Holistic Proxy-based
    Contrastive Replay for Online Continual Learning"). PCR's loss, with the temperature split in two: ``tau``
    inside the softmax, and a gradient temperature whose factor ``tau / tau_g`` on the loss moves along a
    cosine between ``gradient_scale_min`` and ``gradient_scale_max`` (larger steps while the factor is high,
    to learn the new classes, smaller while it is low); and, from the second experience on, two distillation
    terms on the replayed samples towards what the model gave them when they entered the memory: their logits
    on the batch's classes (mean squared error, ``logit_distillation``) and their cosine-similarity structure
    among each other (``similarity_distillation``). The memory keeps each sample's logits and features.

    {DEPARTURES} HPCR's contrastive component, which adds anchor-to-sample pairs to the loss when the batch is
    large, is left out: the authors' published HPCR commands run the loss in its anchor-to-proxy (``proxy``)
    mode alone. The distillation applies from the second experience on, as in that code.""")
