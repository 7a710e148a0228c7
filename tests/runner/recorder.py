"""An observer that records what the runner did at every step, for tests that check the runner's
arithmetic (learning rates per parameter group, planned and executed steps, memory sizes) or what a
tracker logged of it (losses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lifelong.runner.observers import Observer, RunContext, TrainState


@dataclass
class StepRecorder(Observer):
    steps: list[dict[str, Any]] = field(default_factory=list)
    starts: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    context: RunContext | None = None
    optimizer: torch.optim.Optimizer | None = None

    def on_run_start(self, context: RunContext) -> None:
        self.context = context

    def on_optimizer(self, optimizer: torch.optim.Optimizer | None) -> None:
        self.optimizer = optimizer

    def on_experience_start(self, state: TrainState) -> None:
        optimizer = self.optimizer
        self.starts.append({"experience": state.experience, "experience_steps": state.experience_steps,
                            "total_steps": state.total_steps,
                            "optimizer": id(optimizer) if optimizer is not None else None,
                            "optimizer_state": len(optimizer.state) if optimizer is not None else 0})

    def on_step(self, state: TrainState) -> None:
        groups = self.optimizer.param_groups
        self.steps.append({"experience": state.experience, "step": state.step, "experience_step": state.experience_step,
                           "experience_steps": state.experience_steps, "total_steps": state.total_steps,
                           "loss": state.loss, "lr": state.lr, "group_lrs": [g["lr"] for g in groups],
                           "scales": [g["lr_scale"] for g in groups], "batch_size": state.batch_size,
                           "samples": state.experience_samples, "flops": state.experience_flops,
                           "step_flops": state.step_flops, "next_step_flops": state.next_step_flops,
                           "memory": self.context.strategy.memory_size()})

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        self.ends.append({"experience": state.experience, "experience_step": state.experience_step,
                          "experience_steps": state.experience_steps, "step": state.step,
                          "total_steps": state.total_steps, "memory": self.context.strategy.memory_size()})

    def of(self, experience: int) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["experience"] == experience]
