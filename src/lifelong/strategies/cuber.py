"""Continual learning with backward knowledge transfer (CUBER)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.streams import Batch, Experience
from lifelong.models.modes import eval_mode
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.subspaces import (
    LayerSubspaces,
    check_layer_thresholds,
    column_energies,
    fewest_reaching,
    layer_gradients,
    projected_layers,
    representation_sample,
)


@dataclass
class CUBER(Strategy):
    """CUBER (Lin, Yang, Fan & Zhang, NeurIPS 2022, "Beyond Not-Forgetting: Continual Learning with
    Backward Knowledge Transfer"): GPM's projection, relaxed for the old tasks the new one can improve.
    Besides GPM's union basis each layer keeps, per finished experience ``j``, that task's own input
    subspace ``S_j`` (the fewest union directions carrying the layer's threshold of its representation energy,
    ranked by energy as in TRGP, Lin et al. ICLR 2022) and its loss gradient at the end of its training,
    in ``S_j``'s coordinates. Before a new experience, the gradient ``g`` of its loss at the current
    weights (on ``samples`` of its training samples) is tested layer by layer against each old task:
    *sufficient projection*, ``||Proj_{S_j} g|| >= projection_threshold * ||g||`` (TRGP's trust region),
    and *positive correlation*, ``<Proj_{S_j} g, g_j> > 0``: to first order, a step along ``-Proj_{S_j} g``
    lowers task ``j``'s loss as well. For the tasks meeting both, the layer's update may move inside
    ``S_j`` (directions another old task still needs stay protected); every other direction is projected
    out as in GPM. With no such task CUBER is GPM. The bases, their growth (``threshold``,
    ``threshold_increment`` or ``layer_thresholds``), the projection, the head rows kept free under task ids
    and the optional batch-statistics BatchNorm are GPM's
    (:class:`~lifelong.strategies.parts.subspaces.LayerSubspaces`, with GPM's departures).

    Departures: the conditions are tested once per experience (single shot, as TRGP's trust region)
    with the old task's gradient stored at the end of its own training; the paper's forward-transfer
    part for correlated tasks without positive correlation (TRGP's scaled weight projection, extra
    per-task scaling matrices) and any extra loss term on the relaxed tasks are left out, so an update
    inside ``S_j`` is the new task's plain gradient there. The reference code could not be read; the
    conditions follow the paper's definitions of sufficient projection and positive correlation as
    summarized in its abstract and TRGP's code.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(projects_gradients=True)

    threshold: Annotated[float, Interval(gt=0, le=1)] = 0.97
    """GPM's energy threshold of the bases after the first experience (epsilon)."""
    threshold_increment: Annotated[float, Ge(0)] = 0.003
    """Added to the thresholds for each later experience (capped at 1)."""
    layer_thresholds: tuple[float, ...] = ()
    """One threshold per projected layer, in the model's order, in place of ``threshold`` (empty: none)."""
    batch_norm_statistics: bool = False
    """Normalize with every batch's own statistics in BatchNorm layers, in training and evaluation (GPM's
    official code)."""
    samples: Annotated[int, Ge(1)] = 125
    """Training samples of an experience whose layer inputs make its representation, and on which a new
    experience's gradient is tested."""
    projection_threshold: Annotated[float, Interval(ge=0, le=1)] = 0.5
    """epsilon of the sufficient-projection test (TRGP's trust region: 0.5 in its paper, 0.2 in its
    permuted-MNIST script)."""
    subspaces: LayerSubspaces = field(init=False, repr=False)
    """GPM's union basis of each layer (made at :meth:`setup`)."""
    task_columns: dict[str, list[torch.Tensor]] = field(default_factory=dict, init=False, repr=False)
    """Per layer, per finished experience: the columns (long) of the layer's basis that span its subspace."""
    task_gradients: dict[str, list[torch.Tensor]] = field(default_factory=dict, init=False, repr=False)
    """Per layer, per finished experience: its loss gradient (out, k_j) at its end, in its subspace."""
    relaxed: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    """Per layer, the old experiences whose subspaces the current experience may move in."""
    protected: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """Per layer, the basis columns still projected out (derived from the fields above)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.layer_thresholds = check_layer_thresholds(self.layer_thresholds)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.subspaces = LayerSubspaces(self.threshold, self.threshold_increment, self.task_mask is not None,
                                        self.layer_thresholds, self.batch_norm_statistics)
        self.task_columns, self.task_gradients, self.relaxed, self.protected = {}, {}, {}, {}

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        with self.subspaces.normalization(model):
            return super().logits(model, x, task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)

    def gradients(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Each projected layer's loss gradient ``[dW db]`` (out, d) on ``batch``, in eval mode, leaving
        every ``.grad`` untouched."""
        with eval_mode(model):
            return layer_gradients(projected_layers(model), self.loss(model, batch.x, batch.y, batch.task))

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Find, layer by layer, the old tasks the new task's gradient may move in."""
        self.relaxed = {}
        bases = self.subspaces.bases
        if bases:
            batch = representation_sample(model, experience.train, self.samples, self.generator)
            self.relaxed = {name: self.correlated_tasks(name, g) for name, g in self.gradients(model, batch).items()
                            if name in bases}
        self.refresh()

    def correlated_tasks(self, name: str, gradient: torch.Tensor) -> list[int]:
        """The old tasks with sufficient projection and positive correlation of ``gradient`` (out, d) in
        layer ``name``."""
        basis = self.subspaces.bases[name].to(gradient)
        bound = self.projection_threshold * float(gradient.norm())
        tasks = []
        for task, (columns, old) in enumerate(zip(self.task_columns[name], self.task_gradients[name], strict=True)):
            coordinates = gradient @ basis[:, columns.to(gradient.device)]  # (out, k_j)
            if float(coordinates.norm()) >= bound and float((coordinates * old.to(gradient)).sum()) > 0:
                tasks.append(task)
        return tasks

    def refresh(self) -> None:
        """Rebuild the protected bases: every column, less those only relaxed tasks use."""
        self.protected = {}
        for name, basis in self.subspaces.bases.items():
            relaxed = set(self.relaxed.get(name, []))
            keep = torch.ones(basis.shape[1], dtype=torch.bool)
            for task in relaxed:
                keep[self.task_columns[name][task].cpu()] = False
            for task, columns in enumerate(self.task_columns.get(name, [])):
                if task not in relaxed:
                    keep[columns.cpu()] = True
            self.protected[name] = basis[:, keep.to(basis.device)]

    def after_backward(self, model: nn.Module) -> None:
        """Project each layer's gradient off its protected basis; freeze every other parameter."""
        self.subspaces.project(model, self.protected, self.seen_classes)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Grow the bases (GPM), then record the experience's own subspace and gradient in each layer."""
        super().after_experience(model, experience)
        batch = representation_sample(model, experience.train, self.samples, self.generator)
        grams, thresholds = self.subspaces.grow(model, lambda: self.logits(model, batch.x, batch.task))
        gradients = self.gradients(model, batch)
        for name, gram in grams.items():
            basis = self.subspaces.bases[name]
            energies = column_energies(basis, gram)
            order = energies.argsort(descending=True)
            total = float(gram.trace())
            columns = order[:fewest_reaching(energies[order], thresholds[name] * total, total)].sort().values
            self.task_columns.setdefault(name, []).append(columns)
            self.task_gradients.setdefault(name, []).append(gradients[name] @ basis[:, columns].to(gradients[name]))
        self.relaxed = {}
        self.refresh()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.subspaces.state(),
                "task_columns": {k: list(v) for k, v in self.task_columns.items()},
                "task_gradients": {k: list(v) for k, v in self.task_gradients.items()},
                "relaxed": {k: list(v) for k, v in self.relaxed.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.subspaces.load(state)
        self.task_columns = {k: list(v) for k, v in state["task_columns"].items()}
        self.task_gradients = {k: list(v) for k, v in state["task_gradients"].items()}
        self.relaxed = {k: [int(t) for t in v] for k, v in state["relaxed"].items()}
        self.refresh()
