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


def fisher_by_hand(model: nn.Module, data: TensorSet, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One sample at a time: (d log p(label|x) / d theta)^2, averaged over x."""
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(len(data)):
        model.zero_grad()
        F.cross_entropy(model(data.x[i:i + 1]), labels[i:i + 1]).backward()
        for k, p in model.named_parameters():
            expected[k] += p.grad**2 / len(data)
    return expected


def test_empirical_fisher_matches_per_sample_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    data = TensorSet.of(torch.randn(5, 3), torch.tensor([0, 1, 3, 0, 2]), 0)
    fisher = fisher_diagonal(model, data, empirical=True, batch_size=2)
    expected = fisher_by_hand(model, data, data.y)
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], atol=1e-6)


def test_sampled_fisher_uses_labels_drawn_from_the_model() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    data = TensorSet.of(torch.randn(6, 3), torch.zeros(6, dtype=torch.long), 0)
    fisher = fisher_diagonal(model, data, generator=torch.Generator().manual_seed(7), batch_size=4)
    # the same draws, by hand: one multinomial sample per input, batch by batch
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        probs = F.softmax(model(data.x), dim=1)
    labels = torch.cat([torch.multinomial(probs[b:b + 4], 1, generator=generator).flatten() for b in (0, 4)])
    expected = fisher_by_hand(model, data, labels)
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], atol=1e-6)


def test_sampled_fisher_is_unbiased_for_the_true_fisher() -> None:
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    data = TensorSet.of(torch.randn(4, 2).repeat(500, 1), torch.zeros(2000, dtype=torch.long), 0)
    sampled = fisher_diagonal(model, data, generator=torch.Generator().manual_seed(0))
    exact = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for c in range(3):  # sum_c p(c|x) * grad log p(c|x)^2 over the four distinct inputs, by hand
        with torch.no_grad():
            p = F.softmax(model(data.x[:4]), dim=1)[:, c]
        for i in range(4):
            model.zero_grad()
            F.cross_entropy(model(data.x[i:i + 1]), torch.tensor([c])).backward()
            for k, param in model.named_parameters():
                exact[k] += p[i] * param.grad**2 / 4
    for k in exact:
        assert torch.allclose(sampled[k], exact[k], rtol=0.15, atol=1e-4)


def test_fisher_with_class_mask_only_counts_the_task_classes() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    data = TensorSet.of(torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]), 0)
    fisher = fisher_diagonal(model, data, class_mask=torch.tensor([True, True, False, False]),
                             generator=torch.Generator().manual_seed(0))
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
    first = copy.deepcopy(strategy.importance)
    state = strategy.generator.get_state()
    strategy.after_experience(model, stream[1])
    new = fisher_diagonal(model, stream[1].train, generator=torch.Generator().set_state(state))
    for k in first:
        assert torch.allclose(strategy.importance[k], 0.5 * first[k] + new[k])
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
