"""Classes that come back (recurring and blurry streams) update what a strategy keeps of them: one
exemplar set, one mean, one covariance per class, never a second entry (defect 9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lifelong import OptimConfig, recurring, si_blurry, train
from lifelong.data import Experience, Stream, TensorSet
from lifelong.strategies import NCM, SLCA, FeTrIL, ICaRL
from lifelong.strategies.base import StrategyContext

CENTRES = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])


def cluster(label: int, n: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = CENTRES[label] + shift + 0.1 * torch.randn(n, 2, generator=generator)
    return x, torch.full((n,), label, dtype=torch.long)


def experience(index: int, parts: list[tuple[int, int, float]]) -> Experience:
    """An experience of ``(label, samples, shift)`` clusters; tested on 5 unshifted samples per class."""
    train_parts = [cluster(label, n, shift, 10 * index + label) for label, n, shift in parts]
    test_parts = [cluster(label, 5, 0.0, 100 + label) for label, _, _ in parts]
    cat = lambda parts, i: torch.cat([p[i] for p in parts])  # noqa: E731
    return Experience(TensorSet.of(cat(train_parts, 0), cat(train_parts, 1), index),
                      TensorSet.of(cat(test_parts, 0), cat(test_parts, 1), index),
                      classes=tuple(sorted({label for label, _, _ in parts})), task_id=index)


def returning_stream() -> Stream:
    """Classes 0, 1, then 2, 3, then 0 again with 10 more samples shifted by +1 (its mean moves)."""
    return Stream((experience(0, [(0, 10, 0.0), (1, 10, 0.0)]), experience(1, [(2, 10, 0.0), (3, 10, 0.0)]),
                   experience(2, [(0, 10, 1.0), (2, 6, 0.0)])), n_classes=4, input_shape=(2,), name="returning")


def identity_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2, 4))  # the backbone is the identity: features are inputs


def run_hooks(strategy, stream: Stream, model: nn.Module) -> None:
    strategy.setup(StrategyContext(stream, 0))
    for exp in stream:
        strategy.before_experience(model, exp)
        strategy.after_experience(model, exp)


def all_samples_of(stream: Stream, label: int) -> torch.Tensor:
    return torch.cat([e.train.x[e.train.y == label] for e in stream])


def test_ncm_keeps_one_mean_per_class_over_all_its_samples() -> None:
    stream, model = returning_stream(), identity_model()
    strategy = NCM(adapt_experiences=0)
    run_hooks(strategy, stream, model)
    assert strategy.statistics.classes == [0, 1, 2, 3]
    for row, label in enumerate(strategy.statistics.classes):
        assert torch.allclose(strategy.statistics.means()[row], all_samples_of(stream, label).mean(0), atol=1e-6)
    assert torch.allclose(strategy.statistics.means()[0], torch.tensor([0.5, 0.5]), atol=0.1)  # (0,0) and (1,1)


def test_slca_keeps_one_mean_and_covariance_per_class() -> None:
    stream, model = returning_stream(), identity_model()
    strategy = SLCA(adapt_experiences=0, samples_per_class=8)
    run_hooks(strategy, stream, model)
    assert strategy.statistics.classes == [0, 1, 2, 3]
    samples = all_samples_of(stream, 0)
    assert torch.allclose(strategy.statistics.means()[0], samples.mean(0), atol=1e-6)
    assert torch.allclose(strategy.statistics.covariances()[0], torch.cov(samples.T), atol=1e-5)


def test_fetril_updates_a_returning_centroid_and_translates_only_absent_classes() -> None:
    stream, model = returning_stream(), identity_model()
    strategy = FeTrIL(adapt_experiences=0)
    run_hooks(strategy, stream, model)
    assert strategy.statistics.classes == [0, 1, 2, 3]
    assert torch.allclose(strategy.statistics.means()[0], all_samples_of(stream, 0).mean(0), atol=1e-6)


def test_icarl_reherds_a_returning_class_within_the_memory() -> None:
    stream = returning_stream()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 4))
    strategy = ICaRL(buffer_size=12)
    strategy.setup(StrategyContext(stream, 0))
    for index, exp in enumerate(stream):
        strategy.before_experience(model, exp)
        assert len(strategy.training_set(exp)) == strategy.plan(stream.experiences, index).train_size
        strategy.after_experience(model, exp)
        counts = torch.bincount(strategy.memory.exemplars.y, minlength=4)
        per_class = 12 // len(strategy.seen_classes)
        assert strategy.memory_size() <= 12 and int(counts.max()) <= per_class
    # after the last experience: 4 classes of 3 exemplars; class 0 was herded from its old and new samples
    assert torch.bincount(strategy.memory.exemplars.y).tolist() == [3, 3, 3, 3]


def test_icarl_learns_a_returning_class_from_its_labels() -> None:
    # The old model's outputs are the targets of old classes the experience does not hold; a class it
    # holds again (here 0) is learned from its labels, not distilled.
    stream = returning_stream()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 4))
    strategy = ICaRL(buffer_size=12)
    strategy.setup(StrategyContext(stream, 0))
    for exp in stream.experiences[:2]:
        strategy.before_experience(model, exp)
        strategy.after_experience(model, exp)
    with torch.no_grad():
        model[1].weight.add_(0.5)  # the model moves on, so old and new outputs differ
    last = stream[2]
    strategy.before_experience(model, last)
    batch = last.train.batch()
    logits = model(batch.x)  # (B, 4); active classes 0..3
    targets = F.one_hot(batch.y, 4).float()
    old = strategy.teacher(batch.x)
    for c in (1, 3):  # seen before and absent from the experience: distilled
        targets[:, c] = torch.sigmoid(old[:, c])
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
    assert torch.allclose(strategy.observe(model, batch), expected)


def test_runs_on_recurring_and_blurry_streams_keep_one_entry_per_class(small_data) -> None:
    streams = [recurring(small_data, n_experiences=6, classes_per_experience=2, alpha=0.0, seed=1),
               si_blurry(small_data, n_experiences=3, disjoint_ratio=0.3, blurry_ratio=0.2, seed=1)]
    for stream in streams:
        for strategy in (ICaRL(buffer_size=24), NCM(adapt_experiences=1), SLCA(samples_per_class=8),
                         FeTrIL(adapt_experiences=1)):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6))
            result = train(stream, model, strategy, OptimConfig(epochs=1, batch_size=16), seed=0)
            if isinstance(strategy, ICaRL):
                assert max(c.buffer_size for c in result.costs) <= 24
                labels = strategy.memory.exemplars.y
                assert int(torch.bincount(labels).max()) <= 24 // len(strategy.seen_classes)
            else:
                classes = strategy.statistics.classes
                assert classes == sorted(set(classes)) == sorted(set(strategy.seen_classes) & set(classes))
