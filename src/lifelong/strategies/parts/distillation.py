"""Distillation of an earlier model's outputs into the current one: the frozen earlier model a method holds
(:class:`Teacher`: LwF's and iCaRL's targets) and the knowledge-distillation loss (:func:`distillation`)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``,
    averaged over the batch. Both logits are (B, K) over the same K classes; the ``T^2`` factor keeps
    gradient magnitudes comparable across temperatures."""
    log_p_student = F.log_softmax(student / temperature, dim=1)
    p_teacher = F.softmax(teacher.detach() / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


class Teacher:
    """A frozen copy of the model as an earlier experience left it (Li & Hoiem 2017; Rebuffi et al. 2017),
    whose outputs are the targets the current model is distilled towards; ``model`` is None until the
    first :meth:`capture`. It is kept in eval mode (its normalisation layers use running statistics) and
    takes no gradient."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None

    def capture(self, model: nn.Module) -> None:
        """Keep a frozen copy of ``model`` as it is now (at an experience's end)."""
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> Any:
        """The copy's outputs for inputs ``x`` (B, ...): logits (B, C) for a classifier."""
        assert self.model is not None, "the teacher is captured at the end of the first experience"
        return self.model(x)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The copy's weights (None before the first capture)."""
        return None if self.model is None else self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor] | None, template: nn.Module) -> None:
        """Restore :meth:`state_dict`; ``template`` (the restored model) gives the copy its architecture."""
        self.model = None
        if state is not None:
            self.capture(template)
            assert self.model is not None
            self.model.load_state_dict(state)
