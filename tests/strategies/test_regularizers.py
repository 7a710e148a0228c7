import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data import TensorSet, class_incremental
from lifelong.errors import ConfigError
from lifelong.strategies import EWC, LwF
from lifelong.strategies.importance import fisher_diagonal
from lifelong.strategies.losses import distillation, quadratic_penalty


def fisher_by_hand(model: nn.Module, data: TensorSet, empirical: bool) -> dict[str, torch.Tensor]:
    """One sample and one class at a time: sum_c w_c (d log p(c|x) / d theta)^2, averaged over x."""
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(len(data)):
        x = data.x[i:i + 1]
        probs = F.softmax(model(x), dim=1)[0].detach()
        for c in range(probs.numel()):
            weight = float(c == data.y[i]) if empirical else float(probs[c])
            model.zero_grad()
            F.cross_entropy(model(x), torch.tensor([c])).backward()
            for k, p in model.named_parameters():
                expected[k] += weight * p.grad**2 / len(data)
    return expected


@pytest.mark.parametrize("empirical", [False, True])
def test_fisher_of_a_linear_model_matches_per_sample_gradients(empirical: bool) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    data = TensorSet.of(torch.randn(5, 3), torch.tensor([0, 1, 3, 0, 2]), 0)
    fisher = fisher_diagonal(model, data, empirical=empirical, batch_size=2)
    expected = fisher_by_hand(model, data, empirical)
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], atol=1e-6)


def test_fisher_with_class_mask_only_counts_the_task_classes() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    data = TensorSet.of(torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]), 0)
    fisher = fisher_diagonal(model, data, class_mask=torch.tensor([True, True, False, False]))
    assert fisher["weight"][2:].abs().max() == 0 and fisher["bias"][2:].abs().max() == 0
    assert fisher["weight"][:2].abs().min() > 0


def test_quadratic_penalty_zero_at_anchor_and_weighted_away() -> None:
    model = nn.Linear(2, 1, bias=False)
    anchor = {"weight": model.weight.detach().clone()}
    assert quadratic_penalty(model, anchor, {"weight": torch.ones(1, 2)}).item() == 0.0
    with torch.no_grad():
        model.weight += torch.tensor([[1.0, 2.0]])
    # 3 * 1^2 + 0.5 * 2^2 = 5
    assert quadratic_penalty(model, anchor, {"weight": torch.tensor([[3.0, 0.5]])}).item() == pytest.approx(5.0)
    assert quadratic_penalty(model, anchor).item() == pytest.approx(5.0)


def test_ewc_online_fisher_decays(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))
    strategy = EWC(lam=1.0, decay=0.5)
    strategy.setup(stream, seed=0)
    strategy.after_experience(model, stream[0])
    first = copy.deepcopy(strategy.fisher)
    strategy.after_experience(model, stream[1])
    new = fisher_diagonal(model, stream[1].train)
    for k in first:
        assert torch.allclose(strategy.fisher[k], 0.5 * first[k] + new[k])
    batch = stream[1].train.batch()
    plain = F.cross_entropy(model(batch.x), batch.y)
    assert strategy.observe(model, batch).item() == pytest.approx(plain.item())  # at the anchor: no penalty


def test_distillation_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    logits = torch.randn(4, 3)
    assert distillation(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation(logits, logits.flip(1), 2.0).item() > 0.01


def test_lwf_distills_only_on_classes_seen_before(small_data) -> None:
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))
    strategy = LwF(alpha=1.0, temperature=2.0)
    strategy.setup(stream, seed=0)
    strategy.after_experience(model, stream[0])
    assert strategy.seen_classes == [0, 1, 2]
    batch = stream[1].train.batch()
    # the current model equals the old one: the distillation term is zero
    assert strategy.observe(model, batch).item() == pytest.approx(F.cross_entropy(model(batch.x), batch.y).item())
    with torch.no_grad():
        model[1].bias[3:] += 5.0  # new-class logits move: old-class distribution unchanged
    assert strategy.observe(model, batch).item() == pytest.approx(F.cross_entropy(model(batch.x), batch.y).item())
    with torch.no_grad():
        model[1].bias[0] += 5.0  # an old-class logit moves: distillation is paid
    assert strategy.observe(model, batch).item() > F.cross_entropy(model(batch.x), batch.y).item() + 0.01


def test_bad_hyperparameters_name_the_field() -> None:
    with pytest.raises(ConfigError, match="strategy.lam"):
        EWC(lam=-1)
    with pytest.raises(ConfigError, match="strategy.temperature"):
        LwF(temperature=0)
