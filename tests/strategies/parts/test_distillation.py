"""The teacher a distillation method holds: a frozen copy of the model as an experience left it."""

from __future__ import annotations

import torch
from torch import nn

from lifelong.strategies.parts.distillation import Teacher


def test_the_teacher_is_a_frozen_copy_that_survives_a_state_round_trip() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    x = torch.randn(5, 4)
    teacher = Teacher()
    assert teacher.model is None and teacher.state_dict() is None
    teacher.capture(model)
    expected = model.eval()(x).detach()
    model.train()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the model moves on; the teacher does not
    out = teacher(x)
    assert torch.equal(out, expected) and not out.requires_grad  # eval mode: running statistics
    restored = Teacher()
    restored.load_state_dict(teacher.state_dict(), model)
    assert torch.equal(restored(x), expected)
    restored.load_state_dict(None, model)
    assert restored.model is None
