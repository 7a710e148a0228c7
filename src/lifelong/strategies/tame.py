"""TAME: task-agnostic continual learning with experts spawned where the loss jumps, routed by a selector."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lifelong.bounds import Annotated, Ge, Gt
from lifelong.data.streams import Batch
from lifelong.models.nets import split_model
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


class ShiftTest:
    """TAME's detector of a new task: a one-sided z-test of each new loss against the last ``window`` losses.

    A loss ``l`` is a shift when the window is full and ``(l - mean) / std > threshold`` (``std`` the
    window's sample standard deviation): a deviation that training noise makes unlikely (``threshold`` 3:
    p < 0.0014 under a normal loss), while a distribution the model has not learned raises the loss at
    once. A loss that is not a shift joins the window (:meth:`add`); after a shift the caller starts a new
    one (:meth:`reset`), so each expert is tested against its own losses only."""

    def __init__(self, window: int, threshold: float, values: list[float] | None = None) -> None:
        self.window, self.threshold = window, threshold
        self.values: list[float] = list(values or [])

    def statistics(self) -> tuple[float, float]:
        """The window's mean and sample standard deviation (at least 1e-8, so that a flat window still tests)."""
        mean = math.fsum(self.values) / len(self.values)
        variance = math.fsum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1)
        return mean, max(math.sqrt(variance), 1e-8)

    def z(self, value: float) -> float:
        """How many standard deviations ``value`` lies above the window's mean."""
        mean, std = self.statistics()
        return (value - mean) / std

    def shifted(self, value: float) -> bool:
        """Whether ``value`` is a shift (never before the window is full)."""
        return len(self.values) == self.window and self.z(value) > self.threshold

    def add(self, value: float) -> None:
        """Let ``value``, not a shift, join the window (the oldest value leaves a full one)."""
        self.values = [*self.values, value][-self.window:]

    def reset(self) -> None:
        self.values = []


@dataclass
class TAME(Strategy):
    """Task-agnostic continual learning with multiple experts (Zhu, Majzoubi, Jain & Choromanska, arXiv
    2210.03869, 2022, "TAME: Task Agnostic Continual Learning using Multiple Experts"). No task boundary or task id is read: the model
    the runner trains is the active expert, and a statistically significant jump of its training loss
    (:class:`ShiftTest`, a z-test on the running loss) marks the onset of a new task. The stored expert
    whose loss on that batch is normal for it (within ``threshold`` standard deviations of its own losses
    when it was left) takes over (a task that returns); if none is, a new expert is spawned (up to
    ``max_experts``; beyond, the stored expert with the lowest loss takes over). Each batch trains the
    active expert with cross-entropy; a selector network (a copy of the model's backbone with a head over
    the experts) learns which expert an input belongs to from a small reservoir memory, a uniform sample of
    the stream labelled with the expert that trained each sample. At test time the selector routes
    each input to one expert, which predicts among the classes it trained on.

    Built from the paper's account of the method (no code was published): the z-test's window and threshold
    and the rule for a returning task are this implementation's. Departures: there is no online pruning of
    the experts or the selector (memory grows by one model per expert; ``memory_bytes`` counts the stored
    experts). A new expert starts from the weights of the expert that was active (a warm start, for a
    one-pass stream). Experts are switched by loading their weights into the model in place, so an optimizer
    with momentum or moments carries them across a switch (plain SGD has none). The selector trains at every
    step, beside the active expert, on ``replay_batch_size`` (default: the batch's size) rows of the memory
    only, never on the new batch, as the paper trains it on the uniform subset alone. A memory budget
    (``memory_budget_bytes``) is priced at the first step, before any expert is stored. Data-parallel
    training is refused: each rank would test its own shard's loss and could switch experts alone."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        averaging=frozenset(),
        averaging_refusal="switches the model's weights between its experts, which an average would mix")

    buffer_size: BufferSize = 200
    """Samples in the selector's uniform (reservoir) memory."""
    replay_batch_size: ReplayBatchSize = 0
    memory_keeps: MemoryKeeps = "samples"
    memory_budget_bytes: MemoryBudget = 0
    threshold: Annotated[float, Gt(0)] = 3.0
    """The z-score above which a loss is a shift, and below which a stored expert's loss is normal for it."""
    window: Annotated[int, Ge(2)] = 10
    """Losses in the running window of the test; also the fewest steps an expert trains before the next
    shift can be detected."""
    max_experts: Annotated[int, Ge(1)] = 10
    """The most experts spawned (the selector's outputs)."""
    selector_weight: Annotated[float, Ge(0)] = 1.0
    """Weight of the selector's cross-entropy in the step's loss."""
    memory: ReservoirMemory = field(init=False, repr=False)
    test: ShiftTest = field(init=False, repr=False)
    experts: list[dict[str, torch.Tensor]] = field(default_factory=list, init=False, repr=False)
    """Every expert's weights (``model.state_dict()``); the active one's are those of the model itself and
    its entry is written back when it is left."""
    normal: list[tuple[float, float]] = field(default_factory=list, init=False, repr=False)
    """Each expert's loss mean and standard deviation when it was last left ((0, 1) until then: only the
    active expert was never left)."""
    active: int = field(default=0, init=False, repr=False)
    trained: torch.Tensor | None = field(default=None, init=False, repr=False)
    """Which classes (E, C) each expert trained on (bool), None before the first step."""
    selector: nn.Module | None = field(default=None, init=False, repr=False)
    shifts: list[int] = field(default_factory=list, init=False, repr=False)
    """The steps at which a shift was detected."""
    steps: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_keeps(self.memory_keeps)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)
        self.test = ShiftTest(self.window, self.threshold)
        self.experts, self.normal, self.active, self.trained, self.selector = [], [], 0, None, None
        self.shifts, self.steps = [], 0

    def build(self, model: nn.Module) -> None:
        """Make the selector from ``model``: a copy of its backbone and a zero head over ``max_experts``
        (neither random state is drawn from, so a resumed run builds it alike), and the first expert."""
        backbone, head = split_model(model)
        selector_head = nn.Linear(head.in_features, self.max_experts).to(head.weight.device)
        nn.init.zeros_(selector_head.weight)
        nn.init.zeros_(selector_head.bias)
        self.selector = nn.Sequential(copy.deepcopy(backbone), selector_head).requires_grad_(True)
        self.trained = torch.zeros(self.max_experts, self.n_classes, dtype=torch.bool, device=head.weight.device)
        self.experts, self.normal = [snapshot(model)], [(0.0, 1.0)]

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The active expert's (the model's) parameters and the selector's."""
        if self.selector is None:
            self.build(model)
        assert self.selector is not None
        return [{"params": [p for p in model.parameters() if p.requires_grad] + list(self.selector.parameters())}]

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if self.selector is None:
            self.build(model)
        assert self.selector is not None and self.trained is not None
        loss = self.loss(model, batch.x, batch.y, batch.task)
        value = loss.item()
        if self.test.shifted(value):
            self.shifts.append(self.steps)
            self.switch(model, self.expert_for(model, batch))
            loss = self.loss(model, batch.x, batch.y, batch.task)  # the expert that takes over learns the batch
            value = loss.item()
        self.test.add(value)
        self.trained[self.active, batch.y] = True
        if len(self.memory):
            replay = self.memory.replay(self.replay_batch_size or len(batch.y))
            self.selector.train(model.training)
            loss = loss + self.selector_weight * F.cross_entropy(self.route_logits(replay["x"]), replay["expert"])
        self.memory.remember(batch, expert=torch.full_like(batch.y, self.active))
        self.steps += 1
        return loss

    def expert_for(self, model: nn.Module, batch: Batch) -> int:
        """The expert to take over after a shift on ``batch``: the stored expert with the lowest loss on it if
        that loss is normal for it, else a new one (while fewer than ``max_experts``), else the lowest (the
        active one itself when it is the only expert)."""
        losses = {index: self.expert_loss(model, index, batch) for index in range(len(self.experts))
                  if index != self.active}
        if losses:
            best = min(losses, key=losses.__getitem__)
            mean, std = self.normal[best]
            if (losses[best] - mean) / std <= self.threshold or len(self.experts) == self.max_experts:
                return best
        return len(self.experts) if len(self.experts) < self.max_experts else self.active

    @torch.no_grad()
    def expert_loss(self, model: nn.Module, index: int, batch: Batch) -> float:
        """Stored expert ``index``'s cross-entropy on ``batch``."""
        logits = self.mask_logits(functional_call(model, self.experts[index], (batch.x,)), batch.task)
        return F.cross_entropy(logits, batch.y).item()

    @torch.no_grad()
    def switch(self, model: nn.Module, target: int) -> None:
        """Leave the active expert (its weights and loss statistics kept) for expert ``target``, a stored one
        or, at ``len(experts)``, a new one that starts from the active expert's weights."""
        self.experts[self.active] = snapshot(model)
        self.normal[self.active] = self.test.statistics()
        if target == len(self.experts):
            self.experts.append(snapshot(model))
            self.normal.append((0.0, 1.0))
        else:
            model.load_state_dict(self.experts[target])
        self.active = target
        self.test.reset()

    def route_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The selector's logits (B, E) over the experts spawned so far (the others at the lowest value)."""
        assert self.selector is not None
        logits = self.selector(x)
        return logits.masked_fill(torch.arange(self.max_experts, device=logits.device) >= len(self.experts),
                                  torch.finfo(logits.dtype).min)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Each input's class from the expert the selector routes it to, among the classes that expert trained
        on (the model's own prediction before any training)."""
        if self.selector is None or self.trained is None:
            return super().predict(model, x, task)
        self.selector.eval()
        route = self.route_logits(x).argmax(dim=1)  # (B,)
        predicted = torch.zeros_like(route)
        for index in range(len(self.experts)):
            out = model(x) if index == self.active else functional_call(model, self.experts[index], (x,))
            logits = self.mask_logits(out, task)
            logits = logits.masked_fill(~self.trained[index], torch.finfo(logits.dtype).min)
            predicted = torch.where(route == index, logits.argmax(dim=1), predicted)
        return predicted

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict(), "experts": list(self.experts),
                "normal": [list(pair) for pair in self.normal], "active": self.active, "trained": self.trained,
                "selector": None if self.selector is None else self.selector.state_dict(),
                "window": list(self.test.values), "shifts": list(self.shifts), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore in place: the optimizer the runner built from :meth:`parameter_groups` keeps stepping the
        same selector parameters."""
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
        if state["selector"] is not None:
            if self.selector is None:
                self.build(model)
            assert self.selector is not None
            self.selector.load_state_dict(state["selector"])
        self.experts = [dict(weights) for weights in state["experts"]]
        self.normal = [(float(mean), float(std)) for mean, std in state["normal"]]
        self.active, self.trained = int(state["active"]), state["trained"]
        self.test = ShiftTest(self.window, self.threshold, [float(v) for v in state["window"]])
        self.shifts, self.steps = [int(step) for step in state["shifts"]], int(state["steps"])


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s weights and buffers."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
