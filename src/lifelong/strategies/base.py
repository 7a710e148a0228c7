"""The strategy interface: how the loss of a batch is computed and what is remembered between experiences.

A strategy never steps the optimizer: the runner owns backward, clipping, the optimizer step and the
learning-rate schedule, so every strategy gets LR scaling, LARS/LAMB, budgets and mixed precision
for free. Hyperparameters are dataclass fields of the concrete strategy; learned state is created in
the hooks, never in ``__init__``.

The runner learns what a strategy will do in an experience from one explicit, pure declaration,
:meth:`Strategy.plan`, asked for every experience before training starts: how many samples it trains
on (0: no gradient step at all), the learning-rate multiplier of each parameter group, and whether the
optimizer state must start afresh. From the plans the runner derives the planned steps, the schedule's
horizon (one experience or the whole stream), the sampler's epoch lengths and the cost estimate, and
it checks each plan against the training set the strategy then hands over, so a plan that lies is an
error, not a silently wrong learning rate. Memory updates stay in the hooks.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import check_bounds
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.metrics.compute import tensor_bytes
from lifelong.metrics.objectives import (
    CLASSIFICATION,
    LANGUAGE_MODEL,
    logits_of,
    next_token_loss,
)
from lifelong.models.norms import forward_with_tasks
from lifelong.world import World


@dataclass(frozen=True)
class ExperiencePlan:
    """What a strategy will do in one experience, declared before the experience starts.

    ``train_size``: samples in the set :meth:`Strategy.training_set` returns (the runner draws batches
    from it; 0 means the strategy takes no gradient step in this experience). ``lr_scales``: one
    multiplier of the run's learning rate per parameter group of :meth:`Strategy.parameter_groups`, in
    order (e.g. SLCA's slow backbone); empty keeps each group's own ``lr_scale`` (default 1). The runner
    applies them at every experience, whether or not it rebuilds the optimizer. ``reset_optimizer``: the
    optimizer state (momentum, Adam moments) must start afresh even when ``optim.reset_per_experience``
    is false, because the strategy restarts the model (GDumb).
    """

    train_size: int
    lr_scales: tuple[float, ...] = ()
    reset_optimizer: bool = False

    def __post_init__(self) -> None:
        if self.train_size < 0:
            raise ValueError(f"an experience plan needs train_size >= 0, got {self.train_size}")
        if any(not scale >= 0 for scale in self.lr_scales):
            raise ValueError(f"an experience plan needs learning-rate scales >= 0, got {list(self.lr_scales)}")

    @property
    def trains(self) -> bool:
        """Whether the experience takes any gradient step."""
        return self.train_size > 0


AVERAGING_METHODS = frozenset({"ema", "interpolate", "merge"})
"""The weight-averaging methods of ``[average]`` (:mod:`lifelong.runner.averaging`)."""


@dataclass(frozen=True)
class Capabilities:
    """What a strategy can and cannot do, declared once per class (:attr:`Strategy.CAPABILITIES`) and read
    in one place before training (:func:`lifelong.runner.validation.check_capabilities`), so that the
    runner never asks which strategy it runs. Each refusal names the capability and the fix in one line.
    """

    objectives: frozenset[str] = frozenset({CLASSIFICATION})
    """The stream objectives the method is defined for (:mod:`lifelong.metrics.objectives`). A method that
    computes its loss through :meth:`Strategy.loss` and keeps no per-class state (fine-tuning, replay,
    weight penalties, distillation of logits) trains a language model as well; one built on class labels
    (prototypes, class-balanced memories, classifier-head tricks) is refused on a token stream."""
    joint: bool = False
    """The offline upper bound: the runner trains once on the union of the stream."""
    task_ids: bool = False
    """The method chooses its parameters (a mask, a task's own maps or generated weights) by the task id of
    each sample, at test time too: it has no task inference, so streams that do not give task ids
    (class-incremental and plain domain-incremental ones) are refused."""
    distributed: bool = False
    """The method stays correct in data-parallel training (each rank sees a shard of every experience and
    gradients are averaged): every rank ends each experience with the same learned state, kept equal by
    construction (the same data and draws on every rank), averaged over ranks, or split on purpose (a
    replay memory of which each rank keeps its share). Refused when distributed otherwise."""
    sharding: bool = False
    """The method reads and copies no whole parameter (it changes the data or the loss alone), so it runs
    on a model sharded over the ranks with FSDP2 (``run.shard``)."""
    projects_gradients: bool = False
    """The method rewrites the gradient into a constrained direction (A-GEM's projection): an optimizer that
    keeps a velocity or moments applies directions the projection removed, which is warned about."""
    averaging: frozenset[str] = AVERAGING_METHODS
    """The ``[average]`` methods the strategy allows."""
    averaging_refusal: str = ""
    """Why the other averaging methods are refused (completes "but strategy X ...")."""
    freeze: bool = True
    """Whether ``model.freeze`` may freeze the model's backbone for this method."""
    freeze_refusal: str = ""
    """Why ``model.freeze`` is refused, with the fix: completes "model.freeze='backbone' ...", with ``{name}``
    for the strategy's name."""

    def with_(self, **changes: Any) -> Capabilities:
        """These capabilities with ``changes``."""
        return replace(self, **changes)


BOTH_OBJECTIVES = frozenset({CLASSIFICATION, LANGUAGE_MODEL})
"""The objectives of a method that trains classifiers and language models alike."""
OWN_TENSORS = "keeps what it trains in its own tensors (adapters, prompts), which would not be averaged"
"""Why weight averaging is refused to a method that trains tensors outside the model."""
FEATURE_STATISTICS = ("classifies with statistics of the trained model's features, which the average's features "
                      "would not match")
"""Why an EMA is refused to a method that classifies with class statistics of the trained features."""
OWN_TENSORS_FREEZE = ("does not apply to strategy {name!r}, which trains tensors of its own whatever requires_grad "
                      "says; set model.freeze='none'")
"""Why ``model.freeze`` is refused to a method that trains per-task or generated tensors."""


@dataclass(frozen=True)
class StrategyContext:
    """What the runner hands a strategy once, at :meth:`Strategy.setup`: the stream, the run's seed (the
    same on every rank), this process among the data-parallel ranks, and the run's training augmentation
    for the samples a strategy replays from its memory (random crops and flips drawn from the run's seed,
    ``[augment]`` with ``replay = true``), or None, and the stiffest quadratic term the run's optimizer steps
    stably. The runner writes nothing else into a strategy."""

    stream: Stream
    seed: int = 0
    world: World = World()
    replay_augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    stable_curvature: float | None = None
    """The largest curvature ``h`` of a quadratic term ``h / 2 * x^2`` in the loss that the run's optimizer
    steps without diverging at the largest learning rate the run can reach (group scales of 1;
    :func:`~lifelong.optim.registry.stable_curvature`), or None: an adaptive optimizer, whose step stays
    bounded, or a rate not known before training (a probed batch size with ``optim.base_batch_size`` set).
    The weight-anchoring penalties keep their importance below it (:meth:`Anchor.update
    <lifelong.strategies.parts.penalties.Anchor.update>`)."""


class Strategy(ABC):
    """Base class of every continual-learning method.

    The runner calls, in order: :meth:`setup` once per stream and :meth:`plan` for every experience
    (before any training), then for each experience :meth:`before_experience`, :meth:`training_set`
    (only when the plan trains), :meth:`observe` for every batch (the runner back-propagates the
    returned loss and steps), :meth:`after_experience`; evaluation calls :meth:`predict`.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities()
    """What the method can do (:class:`Capabilities`); read through :attr:`capabilities`."""

    context: StrategyContext
    """What the runner handed over at :meth:`setup`."""
    task_mask: torch.Tensor | None
    n_classes: int
    language_model: bool
    """Whether the stream is a language model's token windows (set by :meth:`setup`)."""
    replayed: int = 0
    """Samples replayed from memory into training over the whole run. Only the strategy changes it
    (:meth:`as_replayed`), and it is in :meth:`state_dict`; the runner records what each experience added
    (the count at its end less the count at its start) with the experience's cost."""
    seen_classes: list[int]
    generator: torch.Generator
    """The strategy's draws that every data-parallel rank makes alike (a class-balanced memory filled
    from the whole experience, sampled features), so that their results agree."""
    local_generator: torch.Generator
    """Draws that are this rank's own (a reservoir of this rank's shard); ``generator`` itself in one
    process."""
    device_cache: dict[tuple[Any, torch.device], torch.Tensor]
    """Host values already copied to a device (:meth:`class_index`, the task mask), by value and device."""

    def __post_init__(self) -> None:
        """Refuse hyperparameters outside the ranges declared on their fields (:mod:`lifelong.bounds`); a
        strategy with rules that span fields checks them after calling this."""
        check_bounds("strategy", self)

    @property
    def capabilities(self) -> Capabilities:
        """What this strategy, with its settings, can do; a method whose capabilities depend on a setting
        overrides this property."""
        return self.CAPABILITIES

    @property
    def world(self) -> World:
        """This process among the data-parallel ranks (``context.world``)."""
        return self.context.world

    def setup(self, context: StrategyContext) -> None:
        """Reset learned state for a new stream: classes, task mask and the strategy's generators
        (seeded from the run's seed, the same on every rank)."""
        stream, seed = context.stream, context.seed
        self.context = context
        self.task_mask = stream.task_mask()
        self.n_classes = stream.n_classes
        self.language_model = stream.objective == LANGUAGE_MODEL
        self.seen_classes = []
        self.device_cache = {}
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 0x5EED))
        self.local_generator = torch.Generator().manual_seed(derive_seed(seed, 0x5EED, self.world.rank)) \
            if self.world.distributed else self.generator

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Called before training on ``experience``; the default does nothing."""

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """What this strategy will do in ``experiences[index]`` (``experiences``: every experience the
        runner trains on, in order). Pure and cheap: it may read the experiences and the strategy's
        settings, never its learned state, and changes nothing. Default: train on the experience's
        training set at the run's learning rate."""
        return ExperiencePlan(train_size=len(experiences[index].train))

    def training_set(self, experience: Experience) -> TensorSet:
        """The samples the runner draws batches from for ``experience`` (default: its training set); it
        must hold as many samples as :meth:`plan` declared. Not called when the plan does not train."""
        return experience.train

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups, read when the runner builds an optimizer; each may carry an
        optional ``lr_scale`` (default 1), overridden by :meth:`plan`'s ``lr_scales`` where given.
        Default: one group of every trainable parameter."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    @abstractmethod
    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The training loss (a scalar tensor with a graph) for one batch of the current experience."""

    def after_backward(self, model: nn.Module) -> None:
        """Called once the runner has back-propagated :meth:`observe`'s loss, before clipping and the
        optimizer step: the place to read or rewrite ``p.grad`` (gradient projection, A-GEM; path
        integrals, SI). The default does nothing."""

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Called after training on ``experience``; the default records its classes as seen."""
        self.remember_classes(experience)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Replayed inputs (B, ...) as the run augments its training batches (unchanged without
        augmentation): a memory keeps samples un-augmented and each replay is augmented afresh."""
        augment = self.context.replay_augment
        return x if augment is None else augment(x)

    def as_replayed(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rows just drawn from a memory, as they enter training: counted in :attr:`replayed`, their inputs
        augmented (:meth:`augment`)."""
        self.replayed += len(rows["y"])
        return {**rows, "x": self.augment(rows["x"])}

    def remember_classes(self, experience: Experience) -> None:
        self.seen_classes = sorted(set(self.seen_classes) | set(experience.classes))

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """``model(x)`` (B, C), masked to each sample's task classes when the stream gives task ids. The
        model's task-balancing norm layers (AdaB2N) see each sample's task during the call."""
        return self.mask_logits(forward_with_tasks(model, x, task), task)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The objective's training loss of samples ``(x, y, task)``: cross-entropy of :meth:`logits`
        against ``y``, or, on a token stream, the mean next-token cross-entropy of the windows ``x``
        ``(B, L + 1)`` (the model reads ``x[:, :-1]``)."""
        if self.language_model:
            return next_token_loss(logits_of(model(x[:, :-1])), x[:, 1:])
        return F.cross_entropy(self.logits(model, x, task), y)

    def mask_logits(self, out: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) with the classes outside each sample's task set to the lowest value."""
        if self.task_mask is None:
            return out
        mask = self.task_mask_on(out.device)[task]  # (B, C)
        return out.masked_fill(~mask, torch.finfo(out.dtype).min)

    def task_mask_on(self, device: torch.device) -> torch.Tensor:
        """The task mask (T, C) on ``device``, copied there once (stream given task ids only)."""
        mask = self.task_mask
        assert mask is not None, "the stream gives no task ids"
        return self._on_device(("task_mask",), device, lambda: mask)

    def class_index(self, classes: Sequence[int], device: torch.device) -> torch.Tensor:
        """``classes`` as a long tensor (K,) on ``device``, made once per list of classes. A Python list
        used as an index is made into a host tensor and copied to the device at every use, and on a GPU
        that copy makes the host wait for the device at every step."""
        return self._on_device(tuple(classes), device, lambda: torch.tensor(list(classes), dtype=torch.long))

    def _on_device(self, key: tuple[Any, ...], device: torch.device, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        cached = self.device_cache.get((key, device))
        if cached is None:
            cached = self.device_cache[(key, device)] = make().to(device)
        return cached

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Predicted labels (B,); methods that classify differently (nearest class mean) override this."""
        return self.logits(model, x, task).argmax(dim=1)

    def memory_size(self) -> int:
        """Samples held in memory (replay buffers, exemplars); 0 for memory-free methods."""
        return 0

    def memory_bytes(self) -> int:
        """Bytes of the tensors the strategy keeps beyond the model and the stream: those of its
        :meth:`state_dict` (replay samples or their positions and their logits, exemplars, an earlier
        model's weights, anchor weights and importances, class statistics, per-task tensors, prompts), each
        storage counted once, the generators' states left out. What the cost record reports after each
        experience, and what a total-memory budget (``strategy.memory_budget_bytes``,
        :data:`~lifelong.strategies.parts.memory.MemoryBudget`) charges; a method that keeps tensors of the
        model's own in its state (tuning modules) leaves them out by overriding this."""
        return tensor_bytes(self.state_dict(), skip=("generator", "local_generator"))

    def state_dict(self) -> dict[str, Any]:
        """Learned state as plain tensors and numbers (loadable with ``torch.load(weights_only=True)``)."""
        return {"seen_classes": list(self.seen_classes), "generator": self.generator.get_state(),
                "local_generator": self.local_generator.get_state(), "replayed": self.replayed}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore :meth:`state_dict` after :meth:`setup`; ``model`` is the restored model, a template
        for strategies that keep a copy of an earlier model."""
        self.seen_classes = list(state["seen_classes"])
        self.replayed = int(state["replayed"])
        self.generator.set_state(state["generator"])
        self.local_generator.set_state(state["local_generator"])


Variant = TypeVar("Variant", bound=type[Strategy])


def named_variant(cls: Variant, name: str, doc: str) -> Variant:
    """``cls``, a class that a factory defined anew for one variant of a method (DER and DER++, PCR and
    HPCR: one definition, defaults of its own per variant, each a direct subclass of :class:`Strategy`),
    named ``name`` (found by pickle, named in errors) with its methods' qualified names and docstring ``doc``."""
    cls.__name__ = cls.__qualname__ = name
    for method in vars(cls).values():
        if inspect.isfunction(method):
            method.__qualname__ = f"{name}.{method.__name__}"
    cls.__doc__ = doc
    return cls
