"""The anchoring penalties' importance ceiling: by hand on an anchor, then the run it keeps from diverging."""

import pytest
import torch
from torch import nn

from lifelong import OptimConfig, train
from lifelong.data import class_incremental
from lifelong.errors import TrainingError
from lifelong.models import mlp
from lifelong.strategies import MAS, mas
from lifelong.strategies.parts.penalties import STIFFNESS, Anchor, importance_ceiling


def test_importance_ceiling_by_hand() -> None:
    # SGD lr 0.05, momentum 0.9 steps a curvature up to 76 stably; MAS's penalty lam * Omega * d^2 has
    # curvature 2 lam Omega, so at lam 0.5 Omega may reach 0.5 * 76 / (2 * 0.5) = 38
    assert STIFFNESS == 0.5
    assert importance_ceiling(76.0, 2 * 0.5) == pytest.approx(38.0)
    assert importance_ceiling(None, 1.0) is None  # adaptive optimizer: no ceiling
    assert importance_ceiling(76.0, 0.0) is None  # penalty off


def test_anchor_holds_importance_at_the_ceiling_and_counts_it() -> None:
    model = nn.Linear(3, 1, bias=False)
    anchor = Anchor()
    anchor.update(model, {"weight": torch.tensor([[1.0, 5.0, -2.0]])}, floor=0.0, ceiling=4.0)
    assert anchor.importance["weight"].tolist() == [[1.0, 4.0, 0.0]]
    assert anchor.capped == 1
    anchor.update(model, {"weight": torch.tensor([[3.5, 0.0, 1.0]])}, ceiling=4.0)  # 1 + 3.5 > 4: capped
    assert anchor.importance["weight"].tolist() == [[4.0, 4.0, 1.0]]
    assert anchor.capped == 2
    anchor.update(model, {"weight": torch.tensor([[1.0, 1.0, 1.0]])})  # no ceiling: accumulates freely
    assert anchor.importance["weight"].tolist() == [[5.0, 5.0, 2.0]]
    assert anchor.capped == 0


class Spy(MAS):
    """MAS that keeps the curvature bound the runner handed over."""

    def setup(self, context) -> None:
        super().setup(context)
        self.handed = context.stable_curvature


def test_mas_at_a_strength_that_diverged_trains_with_its_importance_held(digits_data, monkeypatch) -> None:
    # lam = 1 (the paper's value) drives class-incremental digits to nan at SGD lr 0.03, momentum 0.9: the
    # output sensitivity of the first layer's weights passes the step's stable stiffness
    stream = class_incremental(digits_data, 5)
    optim = OptimConfig(lr=0.03, momentum=0.9, batch_size=16, epochs=1)
    torch.manual_seed(0)
    strategy = Spy(lam=1.0)
    result = train(stream, mlp(stream.input_shape, stream.n_classes), strategy, optim, seed=0)
    assert strategy.handed == pytest.approx(3.8 / 0.03)
    assert strategy.anchor.capped > 0
    assert max(float(v.max()) for v in strategy.anchor.importance.values()) == pytest.approx(
        importance_ceiling(3.8 / 0.03, 2.0))
    assert result.matrix[-1, -1] > 0.4  # the last experience is learned (0.49), held back by the strong penalty
    adam = Spy(lam=1.0)
    train(stream, mlp(stream.input_shape, stream.n_classes), adam, optim.model_copy(update={"name": "adam",
                                                                                         "lr": 1e-3}), seed=0)
    assert adam.handed is None and adam.anchor.capped == 0  # Adam's step is bounded: the paper's importance
    monkeypatch.setattr(mas, "importance_ceiling", lambda curvature, factor: None)
    torch.manual_seed(0)
    with pytest.raises(TrainingError, match="the loss became"):  # the same run without the ceiling
        train(stream, mlp(stream.input_shape, stream.n_classes), MAS(lam=1.0), optim, seed=0)
