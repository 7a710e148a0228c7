"""Continual learning with backward knowledge transfer (CUBER)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.streams import Experience
from lifelong.errors import ConfigError
from lifelong.models.modes import eval_mode
from lifelong.strategies.base import Capabilities, StrategyContext
from lifelong.strategies.gpm import GPM
from lifelong.strategies.parts.subspaces import (
    column_energies,
    fewest_reaching,
    layer_gradients,
    projected_layers,
)


@dataclass
class CUBER(GPM):
    """CUBER (Lin, Yang, Fan & Zhang, NeurIPS 2022, "Beyond Not-Forgetting: Continual Learning with
    Backward Knowledge Transfer"): GPM's projection, relaxed for the old tasks the new one can improve.
    Besides GPM's union basis each layer keeps, per finished experience ``j``, that task's own input
    subspace ``S_j`` (the fewest union directions carrying ``threshold`` of its representation energy,
    ranked by energy as in TRGP, Lin et al. ICLR 2022) and its loss gradient at the end of its training,
    in ``S_j``'s coordinates. Before a new experience, the gradient ``g`` of its loss at the current
    weights (on ``samples`` of its training samples) is tested layer by layer against each old task:
    *sufficient projection*, ``||Proj_{S_j} g|| >= projection_threshold * ||g||`` (TRGP's trust region),
    and *positive correlation*, ``<Proj_{S_j} g, g_j> > 0``: to first order, a step along ``-Proj_{S_j} g``
    lowers task ``j``'s loss as well. For the tasks meeting both, the layer's update may move inside
    ``S_j`` (directions another old task still needs stay protected); every other direction is projected
    out as in GPM. With no such task CUBER is GPM.

    Departures: the conditions are tested once per experience (single shot, as TRGP's trust region)
    with the old task's gradient stored at the end of its own training; the paper's forward-transfer
    part for correlated tasks without positive correlation (TRGP's scaled weight projection, extra
    per-task scaling matrices) and any extra loss term on the relaxed tasks are left out, so an update
    inside ``S_j`` is the new task's plain gradient there. The reference code could not be read; the
    conditions follow the paper's definitions of sufficient projection and positive correlation as
    summarized in its abstract and TRGP's code.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(projects_gradients=True)

    projection_threshold: float = 0.5
    """epsilon of the sufficient-projection test (TRGP's trust region: 0.5 in its paper, 0.2 in its
    permuted-MNIST script)."""
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
        if not 0.0 <= self.projection_threshold <= 1.0:
            raise ConfigError(f"strategy.projection_threshold must lie in [0, 1], got {self.projection_threshold}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.task_columns, self.task_gradients, self.relaxed, self.protected = {}, {}, {}, {}

    def protected_basis(self, name: str) -> torch.Tensor:
        return self.protected[name]

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Find, layer by layer, the old tasks the new task's gradient may move in."""
        self.relaxed = {}
        if self.bases:
            batch = self.representation_batch(model, experience)
            layers = projected_layers(model)
            with eval_mode(model):
                gradients = layer_gradients(layers, self.loss(model, batch))
            self.relaxed = {name: self.correlated_tasks(name, g) for name, g in gradients.items() if name in self.bases}
        self.refresh()

    def correlated_tasks(self, name: str, gradient: torch.Tensor) -> list[int]:
        """The old tasks with sufficient projection and positive correlation of ``gradient`` (out, d) in
        layer ``name``."""
        basis = self.bases[name].to(gradient)
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
        for name, basis in self.bases.items():
            relaxed = set(self.relaxed.get(name, []))
            keep = torch.ones(basis.shape[1], dtype=torch.bool)
            for task in relaxed:
                keep[self.task_columns[name][task].cpu()] = False
            for task, columns in enumerate(self.task_columns.get(name, [])):
                if task not in relaxed:
                    keep[columns.cpu()] = True
            self.protected[name] = basis[:, keep.to(basis.device)]

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Grow the bases (GPM), then record the experience's own subspace and gradient in each layer."""
        self.remember_classes(experience)
        batch, grams, threshold = self.consolidate(model, experience)
        with eval_mode(model):
            gradients = layer_gradients(projected_layers(model), self.loss(model, batch))
        for name, gram in grams.items():
            basis = self.bases[name]
            energies = column_energies(basis, gram)
            order = energies.argsort(descending=True)
            total = float(gram.trace())
            columns = order[:fewest_reaching(energies[order], threshold * total, total)].sort().values
            self.task_columns.setdefault(name, []).append(columns)
            self.task_gradients.setdefault(name, []).append(gradients[name] @ basis[:, columns].to(gradients[name]))
        self.relaxed = {}
        self.refresh()

    def extra_parameters(self) -> int:
        """Floats in the bases and the stored gradients, plus the column indices of the task subspaces."""
        stored = [t for lists in (*self.task_columns.values(), *self.task_gradients.values()) for t in lists]
        return super().extra_parameters() + sum(t.numel() for t in stored)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "task_columns": {k: list(v) for k, v in self.task_columns.items()},
                "task_gradients": {k: list(v) for k, v in self.task_gradients.items()},
                "relaxed": {k: list(v) for k, v in self.relaxed.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.task_columns = {k: list(v) for k, v in state["task_columns"].items()}
        self.task_gradients = {k: list(v) for k, v in state["task_gradients"].items()}
        self.relaxed = {k: [int(t) for t in v] for k, v in state["relaxed"].items()}
        self.refresh()
