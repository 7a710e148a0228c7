import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data import TensorSet, class_incremental
from lifelong.errors import ConfigError
from lifelong.models import mlp, per_sample
from lifelong.models.per_sample import CPU_CHUNK_BYTES
from lifelong.strategies import EWC, LwF
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.distillation import distillation
from lifelong.strategies.parts.importance import fisher_diagonal
from lifelong.strategies.parts.penalties import QuadraticPenalty


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
    fisher = fisher_diagonal(model, data, labels="empirical", batch_size=2)
    expected = fisher_by_hand(model, data, data.y)
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], atol=1e-6)


def test_weighted_fisher_is_mammoths_estimate() -> None:
    # DER's reference code (Mammoth's ewc_on): p(y|x) * (d log p(y|x) / d theta)^2 with the true label, one
    # backward pass per sample, averaged
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    data = TensorSet.of(torch.randn(5, 3), torch.tensor([0, 1, 3, 0, 2]), 0)
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(len(data)):
        model.zero_grad()
        log_p = F.log_softmax(model(data.x[i:i + 1]), dim=1)[0, data.y[i]]
        log_p.backward()
        for k, p in model.named_parameters():
            expected[k] += log_p.exp().detach() * p.grad**2 / len(data)
    fisher = fisher_diagonal(model, data, labels="weighted", batch_size=2)
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], atol=1e-7)
    empirical = fisher_diagonal(model, data, labels="empirical", batch_size=2)
    assert all((fisher[k] <= empirical[k] + 1e-9).all() for k in expected)  # p(y|x) <= 1 weighs every term down


def test_fisher_labels_are_checked() -> None:
    with pytest.raises(ConfigError, match="strategy.fisher_labels must be one of"):
        EWC(fisher_labels="true")


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


def test_chunked_fisher_of_an_mlp_equals_the_per_sample_loop(digits_data, monkeypatch) -> None:
    # The digits MLP has 64*256 + 256 + 256*256 + 256 + 256*10 + 10 = 85,002 parameters (340,008 bytes
    # of float32 per sample), so per-sample gradients would go through vmap in chunks of
    # 4,194,304 // 340,008 = 12 samples; the floor of 32 rows makes them one label batch. With the floor
    # at 1, 70 samples in label batches of 32 make the chunks 12 + 12 + 8 | 12 + 12 + 8 | 6. Every chunk
    # and batch boundary must give what one backward pass per sample gives, with the same labels drawn
    # from the model, restricted to the task's four classes.
    torch.manual_seed(0)
    model = mlp((1, 8, 8), 10)
    assert sum(p.numel() for p in model.parameters()) == 85_002
    assert CPU_CHUNK_BYTES // (85_002 * 4) == 12 and per_sample.MIN_CHUNK_ROWS == 32
    monkeypatch.setattr(per_sample, "MIN_CHUNK_ROWS", 1)
    data = TensorSet.of(digits_data.x_train[:70], digits_data.y_train[:70], 0)
    mask = torch.tensor([True, True, True, True] + [False] * 6)
    fisher = fisher_diagonal(model, data, class_mask=mask, generator=torch.Generator().manual_seed(3), batch_size=32)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        logits = model(data.x).masked_fill(~mask, torch.finfo(torch.float32).min)
    labels = torch.cat([torch.multinomial(F.softmax(logits[b:b + 32], dim=1), 1, generator=generator).flatten()
                        for b in (0, 32, 64)])
    assert set(labels.tolist()) <= {0, 1, 2, 3}
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(len(data)):
        model.zero_grad()
        out = model(data.x[i:i + 1]).masked_fill(~mask, torch.finfo(torch.float32).min)
        F.cross_entropy(out, labels[i:i + 1]).backward()
        for k, p in model.named_parameters():
            expected[k] += p.grad**2 / len(data)
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], rtol=0, atol=1e-6), k
    assert fisher["head.weight"][4:].abs().max() == 0  # the classes outside the task get nothing


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
    assert QuadraticPenalty(anchor, {"weight": torch.ones(1, 2)})(model).item() == 0.0
    with torch.no_grad():
        model.weight += torch.tensor([[1.0, 2.0]])
    # 3 * 1^2 + 0.5 * 2^2 = 5
    penalty = QuadraticPenalty(anchor, {"weight": torch.tensor([[3.0, 0.5]])})(model)
    assert penalty.item() == pytest.approx(5.0)
    penalty.backward()  # d/dw of w_i d_i^2 = 2 w_i d_i: (2 * 3 * 1, 2 * 0.5 * 2)
    assert model.weight.grad.tolist() == [[6.0, 2.0]]
    model.weight.grad = None
    assert QuadraticPenalty(anchor)(model).item() == pytest.approx(5.0)
    QuadraticPenalty(anchor)(model).backward()  # unweighted: 2 d
    assert model.weight.grad.tolist() == [[2.0, 4.0]]


def test_ewc_online_fisher_decays(small_data) -> None:
    stream = class_incremental(small_data, 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6))
    strategy = EWC(lam=1.0, decay=0.5)
    strategy.setup(StrategyContext(stream, 0))
    strategy.after_experience(model, stream[0])
    first = copy.deepcopy(strategy.anchor.importance)
    state = strategy.generator.get_state()
    strategy.after_experience(model, stream[1])
    new = fisher_diagonal(model, stream[1].train, generator=torch.Generator().set_state(state))
    for k in first:
        assert torch.allclose(strategy.anchor.importance[k], 0.5 * first[k] + new[k])
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
    strategy.setup(StrategyContext(stream, 0))
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
