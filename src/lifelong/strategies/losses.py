"""Loss terms shared by several strategies."""

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


def quadratic_penalty(model: torch.nn.Module, anchor: dict[str, torch.Tensor],
                      importance: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``sum_i w_i (theta_i - anchor_i)^2`` over the named parameters in ``anchor``; ``w = 1`` when
    ``importance`` is None. EWC, SI, MAS and L2 differ only in ``importance``."""
    total = torch.zeros((), device=next(iter(anchor.values())).device)
    for name, param in model.named_parameters():
        if name in anchor:
            diff = (param - anchor[name]) ** 2
            total = total + (diff if importance is None else importance[name] * diff).sum()
    return total
