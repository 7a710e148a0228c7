"""Distillation of an earlier model's outputs into the current one (LwF, iCaRL's and DER's targets)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``,
    averaged over the batch. Both logits are (B, K) over the same K classes; the ``T^2`` factor keeps
    gradient magnitudes comparable across temperatures."""
    log_p_student = F.log_softmax(student / temperature, dim=1)
    p_teacher = F.softmax(teacher.detach() / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2
