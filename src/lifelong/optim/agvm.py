"""AGVM, the Adaptive Gradient Variance Modulator (Xue et al. 2022, "Large-batch Optimization for Dense Visual
Predictions", NeurIPS; reference code Sense-X/AGVM, ``AgvmOptimizerHook``): each module of the model (its
top-level children: a classifier's ``backbone`` and ``head``) gets its own learning rate, rescaled so that the
modules' gradient variances are aligned with the reference module's (the backbone).

The reference code measures a module's gradient variance as ``phi = 1 - cos(g_a, g_b)``, ``g_a`` and ``g_b`` the
module's gradients averaged over each half of the data-parallel devices: two independent estimates of the same
gradient ``mu`` with noise ``e`` of variance ``sigma^2`` each, for which ``1 - cos`` is about
``sigma^2 / (|mu|^2 + sigma^2)``, the noise's share of the gradient, whatever the gradient's scale. Every
``every_steps`` steps (from ``start_step`` on) each module's factor moves towards ``sqrt(clamp((phi_ref + eps) /
(phi + eps), min_ratio, max_ratio))`` with an exponential moving average of decay ``alpha`` (from 1), and each
step runs at the module's rate times its factor: a module noisier than the backbone steps slower, a less noisy
one faster. Defaults are the reference code's: ``alpha`` 0.97 (the paper's momentum), the ratio clamped to
[0.5, 10], ``eps`` 1e-6, every 5 steps.

Departures:

* **the two estimates are consecutive steps' gradients**, ``g_{t-1}`` and ``g_t``, not two halves of one step's
  devices: one process has no halves, and splitting each batch into two backward passes would have to split every
  strategy's loss (replay, distillation, penalties), which the optimizer never sees. The two are independent
  batches, so ``1 - cos`` estimates the same noise share, at the cost of one copy of the gradients kept for one
  step before each measurement, and biased up by how much the mean gradient moves in one step (one step of a
  small learning rate). In a data-parallel run both are the averaged gradient of the global batch (the reference's
  halves hold half of it each: their noise is twice as large, for every module alike); every rank sees the same
  gradients and computes the same factors, so nothing is communicated. A model sharded with FSDP holds each
  gradient in pieces and is refused (:func:`lifelong.runner.sharding.check_sharding`);
* the raw gradient is compared for every optimizer (the reference divides by Adam's second moment under Adam);
* ``start_step`` defaults to 0, not the reference hook's 500: its 500 is its warmup's length, after which it asks
  AGVM to start, and the library's schedules warm up for 0 steps unless told; the step count is the optimizer's,
  which restarts with a rebuilt optimizer (``optim.reset_per_experience``), so each experience then restarts the
  factors at 1.

The modules' factors and the step count are kept in the optimizer's state (``state["agvm"]``) and the stored
gradient in each parameter's (``state[p]["agvm_gradient"]``), so a checkpoint, which saves the optimizer's
``state_dict``, resumes the factors bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lifelong.errors import ConfigError
from lifelong.optim.decay import SOURCE_GROUP

MODULE = "agvm_module"
"""Key of a parameter group: the top-level module of the model its parameters belong to."""
STATE = "agvm"
"""Key of the optimizer's state holding the step count and each module's factor."""
GRADIENT = "agvm_gradient"
"""Key of a parameter's state holding its gradient of the step before a measurement."""
OUTSIDE = "(outside the model)"
"""The module of the parameters that are not the model's (a strategy's own)."""


def _check(condition: bool, field: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"optim.agvm_params.{field} must be {allowed}, got {value!r}")


def top_modules(model: nn.Module) -> dict[int, str]:
    """The name of the top-level child of ``model`` each parameter belongs to (``""`` for the model's own), by id."""
    names = {id(p): "" for p in model.parameters(recurse=False)}
    for name, child in model.named_children():
        names.update((id(p), name) for p in child.parameters() if id(p) not in names)
    return names


@dataclass(frozen=True)
class AGVM:
    """AGVM's settings (``optim.agvm_params``, module docstring): :meth:`split` gives each module its parameter
    groups, :meth:`attach` rescales their rates at every step of an optimizer built over them."""

    alpha: float = 0.97
    """Decay of the moving average of each module's factor (the reference's ``momentum``)."""
    every_steps: int = 5
    """Steps between two measurements (the reference's ``lr_update_interval``)."""
    start_step: int = 0
    """The optimizer's step of the first measurement is ``start_step + every_steps``; factors are 1 before."""
    min_ratio: float = 0.5
    max_ratio: float = 10.0
    """The clamp of ``(phi_ref + eps) / (phi + eps)`` before its square root (the reference's 0.5 and 10)."""
    reference: str = "backbone"
    """The module whose gradient variance the others are aligned with: a top-level child of the model."""
    eps: float = 1e-6

    def __post_init__(self) -> None:
        _check(0.0 <= self.alpha < 1.0, "alpha", self.alpha, "in [0, 1)")
        _check(self.every_steps >= 1, "every_steps", self.every_steps, ">= 1")
        _check(self.start_step >= 0, "start_step", self.start_step, ">= 0")
        _check(self.min_ratio > 0, "min_ratio", self.min_ratio, "> 0")
        _check(self.max_ratio >= self.min_ratio, "max_ratio", self.max_ratio, f">= min_ratio ({self.min_ratio})")
        _check(self.eps > 0, "eps", self.eps, "> 0")

    def check(self, model: nn.Module) -> None:
        """Refuse a model without a top-level module named ``reference`` that has parameters (a strategy may
        freeze it later, e.g. FeTrIL's backbone after the first experience: with no reference gradient to
        compare with, the factors hold)."""
        found = [name for name, child in model.named_children() if next(child.parameters(), None) is not None]
        _check(self.reference in found, "reference", self.reference,
               f"a top-level module of the model with parameters, one of {found}")

    def split(self, groups: Sequence[dict[str, Any]], model: nn.Module) -> list[dict[str, Any]]:
        """``groups`` split by module: each group's parameters of each top-level module of ``model`` (in the
        order they come) form a group of their own, with the group's other keys, :data:`MODULE` and
        :data:`SOURCE_GROUP` (the group it came from, which a plan's ``lr_scales`` refers to)."""
        self.check(model)
        modules = top_modules(model)
        split: list[dict[str, Any]] = []
        for index, group in enumerate(groups):
            parts: dict[str, list[nn.Parameter]] = {}
            for p in group["params"]:
                parts.setdefault(modules.get(id(p), OUTSIDE), []).append(p)
            source = group.get(SOURCE_GROUP, index)
            split += [{**group, "params": params, MODULE: module, SOURCE_GROUP: source}
                      for module, params in parts.items()]
        return split

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Rescale, at each step of ``optimizer`` (built over :meth:`split`'s groups), every group's rate by its
        module's factor, with the rates restored after the step (the runner writes them only when they change)."""
        Modulator(self, optimizer)

    def measured(self, step: int) -> bool:
        """Whether the optimizer's step ``step`` (0-based) measures the variances."""
        return step > self.start_step and (step - self.start_step) % self.every_steps == 0


class Modulator:
    """The step hooks of :meth:`AGVM.attach` (torch's ``register_step_pre_hook`` and ``..._post_hook``)."""

    def __init__(self, settings: AGVM, optimizer: torch.optim.Optimizer) -> None:
        self.settings = settings
        self.rates: list[float] = []
        """Each group's rate before the step rescaled it."""
        optimizer.register_step_pre_hook(self.before_step)
        optimizer.register_step_post_hook(self.after_step)

    def before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        state = optimizer.state[STATE]  # type: ignore[index]  # torch keys its state by parameter, but keeps others
        if not state:
            state.update(steps=0, factors={})
        if self.settings.measured(state["steps"]):
            self._measure(optimizer, state["factors"])
        factors = state["factors"]
        self.rates = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factors.get(group[MODULE], 1.0)

    def after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group, rate in zip(optimizer.param_groups, self.rates, strict=True):
            group["lr"] = rate
        state = optimizer.state[STATE]  # type: ignore[index]
        state["steps"] += 1
        if self.settings.measured(state["steps"]):  # the next step compares its gradient with this one's
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:  # after the step: the optimizer has set up the parameter's state
                        optimizer.state[p][GRADIENT] = p.grad.detach().clone()

    @torch.no_grad()
    def _measure(self, optimizer: torch.optim.Optimizer, factors: dict[str, float]) -> None:
        """Each module's ``phi = 1 - cos(g_{t-1}, g_t)`` over its parameters with both gradients, and its factor
        moved towards ``sqrt(clamp((phi_ref + eps) / (phi + eps)))``; the stored gradients are released."""
        settings = self.settings
        sums: dict[str, list[torch.Tensor]] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                previous = optimizer.state[p].pop(GRADIENT, None) if p in optimizer.state else None
                if previous is None or p.grad is None:
                    continue
                g, h = p.grad.flatten(), previous.flatten()
                sums.setdefault(group[MODULE], []).append(torch.stack([g @ h, h @ h, g @ g]))
        if settings.reference not in sums:
            return
        names = list(sums)
        totals = torch.stack([torch.stack(sums[name]).sum(dim=0) for name in names]).tolist()
        phi = {name: 1.0 - dot / max(math.sqrt(before * now), 1e-12)
               for name, (dot, before, now) in zip(names, totals, strict=True)}
        reference = phi[settings.reference] + settings.eps
        for name in names:
            if name == settings.reference:
                continue
            ratio = min(max(reference / (phi[name] + settings.eps), settings.min_ratio), settings.max_ratio)
            factors[name] = settings.alpha * factors.get(name, 1.0) + (1.0 - settings.alpha) * math.sqrt(ratio)
