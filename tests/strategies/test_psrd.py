"""PSRD: the supervised contrastive, prototype and relation-distillation losses on four samples by hand, a
first step from its parts, the groups of old classes, its settings' refusals, an exact resume after SIGKILL
and online digits."""

from __future__ import annotations

import math

import pytest
import torch

from lifelong import PSRD, class_incremental, mlp
from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.contrastive import (
    relation_distillation,
    supervised_contrastive_loss,
)
from tests.runner.test_checkpoint_resume import resumed_and_reference
from tests.strategies.online import online_run

SQUARE = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
"""Four unit features at right angles: each one's neighbours at cosine 0, its opposite at -1."""


def test_the_supervised_contrastive_loss_of_four_samples_by_hand() -> None:
    # anchor (1, 0) of class 0: positive (0, 1) at cosine 0, the others at 0 and -1; at tau = 0.5 the
    # log-probability of the positive is 0 - log(e^0 + e^0 + e^-2), the same for every anchor by symmetry
    expected = 0.5 / 0.07 * math.log(2 + math.exp(-2))
    labels = torch.tensor([0, 0, 1, 1])
    assert supervised_contrastive_loss(3 * SQUARE, labels, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # an anchor without a positive is left out of the mean: the first two alone, with the same value
    assert supervised_contrastive_loss(SQUARE, torch.tensor([0, 0, 1, 2]), 0.5).item() == pytest.approx(
        expected, rel=1e-6)


def set_up(small_data, **settings) -> tuple[PSRD, torch.nn.Module]:
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    strategy = PSRD(**settings)
    strategy.setup(StrategyContext(stream))
    strategy.before_experience(model, stream[0])  # classes 0 and 1 are the current ones
    return strategy, model


def test_the_prototype_losses_of_four_samples_by_hand(small_data) -> None:
    strategy, _ = set_up(small_data, temperature=0.5)
    prototypes = torch.zeros(6, 2)
    prototypes[0], prototypes[1], prototypes[2] = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 1.0]), 1.0
    features = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])  # the last two lie on the other class's prototype
    # cosines to the current classes' prototypes (class 2 and the rest compete not): (1, 0), (0, 1), (0, 1),
    # (1, 0); over tau = 0.5 the right class gets 2 more than the wrong one twice, 2 less twice
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
    assert strategy.prototype_term(features, prototypes, labels).item() == pytest.approx(expected, rel=1e-6)
    strategy.prototype_loss = "cosine"  # the authors' code: 1 - cos to the own prototype, 0, 0, 1, 1
    assert strategy.prototype_term(features, prototypes, labels).item() == pytest.approx(0.5)


def test_the_relation_distillation_of_four_samples_by_hand() -> None:
    prototypes, old_prototypes = torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.eye(2)  # the same directions
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    old_features = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # the first two samples swapped their scores (1, 0) <-> (0, 1): KL(q || p) = (e - 1) / (e + 1) each; the
    # last two relate to the prototypes as before: 0; averaged over the four samples
    expected = 2 * (math.e - 1) / (math.e + 1) / 4
    both = [torch.tensor([0, 1])]
    found = relation_distillation(features, prototypes, old_features, old_prototypes, both, 1.0)
    assert found.item() == pytest.approx(expected, rel=1e-6)
    # a task of one class has a single relation, whose softmax is 1 whatever the features: nothing to distil
    alone = [torch.tensor([0]), torch.tensor([1])]
    assert relation_distillation(features, prototypes, old_features, old_prototypes, alone, 1.0).item() == 0.0


def test_the_first_step_is_supervised_contrast_and_prototypes_and_then_relations_are_distilled(small_data) -> None:
    strategy, model = set_up(small_data, temperature=0.3)
    stream = class_incremental(small_data, 3)
    train_set = stream[0].train
    batch = Batch(train_set.x[:8], train_set.y[:8], train_set.task[:8])
    features = model.backbone(batch.x)
    by_hand = supervised_contrastive_loss(features, batch.y, 0.3) + strategy.prototype_term(
        features.detach(), model.head.weight, batch.y)
    assert strategy.observe(model, batch).item() == pytest.approx(by_hand.item(), rel=1e-6)
    strategy.after_experience(model, stream[0])
    strategy.before_experience(model, stream[1])
    assert strategy.groups == [sorted(stream[0].classes)] and strategy.current == sorted(stream[1].classes)
    # the teacher is the model as it is: its relations are the current ones, so the distillation adds 0
    second = stream[1].train
    batch = Batch(second.x[:8], second.y[:8], second.task[:8])
    features = model.backbone(batch.x)
    by_hand = supervised_contrastive_loss(features, batch.y, 0.3) + strategy.prototype_term(
        features.detach(), model.head.weight, batch.y)
    assert strategy.observe(model, batch).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_a_prototype_loss_that_does_not_exist_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="strategy.prototype_loss") as refused:
        PSRD(prototype_loss="hinge")
    assert "\n" not in str(refused.value)


def test_psrd_resumes_after_sigkill_to_the_same_run(small_data, tmp_path) -> None:
    resumed_and_reference(class_incremental(small_data, 3), "psrd", tmp_path, {"psrd": {}})


def test_online_on_digits_psrd_learns_each_experience_without_replay(digits_data) -> None:
    # measured (seed 0): right after each experience 1.0, 0.42, 0.98, 0.99, 0.69 on it; 0.291 at the end
    # (chance 0.1), nothing stored. Prototypes at the run's learning rate: at a tenth of it (the authors'
    # multi-epoch default) this run ends at 0.118, the newest experience at 0.0 after its 27 steps.
    stream = class_incremental(digits_data, 5)
    result = online_run(stream, PSRD(prototype_lr_scale=1.0))
    assert float(result.matrix.diagonal().mean()) > 0.75
    assert result.metrics["final_accuracy"] > 0.2
