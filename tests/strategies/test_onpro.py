"""OnPro: the loss of a first step from its parts, the feedback's draws (which slots, which classes), its
settings' refusals, an exact resume after SIGKILL and online digits against ER and ER-ACE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong import ER, ERACE, OnPro, class_incremental, mlp
from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.contrastive import prototype_equilibrium_loss
from tests.runner.test_checkpoint_resume import resumed_and_reference
from tests.strategies.online import online_digits_accuracies


def set_up(small_data, **settings) -> tuple[OnPro, torch.nn.Module, Batch]:
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    strategy = OnPro(**settings)
    strategy.setup(StrategyContext(stream))
    train = stream[0].train
    return strategy, model, Batch(train.x[:8], train.y[:8], train.task[:8])


def test_the_first_step_is_the_new_batchs_cross_entropy_and_prototype_equilibrium(small_data) -> None:
    strategy, model, batch = set_up(small_data, prototype_temperature=0.3)
    features = model.backbone(batch.x)
    by_hand = F.cross_entropy(model.head(features), batch.y) + prototype_equilibrium_loss(
        features, features, batch.y, 6, 0.3)  # one view: no augmentation in this run
    assert strategy.observe(model, batch).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert strategy.prototypes is None  # nothing was replayed yet


def test_a_class_sample_is_drawn_uniformly_among_that_classs_slots(small_data) -> None:
    strategy, _, _ = set_up(small_data, buffer_size=5)
    labels = torch.tensor([0, 1, 0, 2, 1])
    strategy.memory.offer(torch.zeros(5, 8), labels, torch.zeros(5, dtype=torch.long))
    # class 0 sits in slots 0 and 2, class 1 in 1 and 4, class 2 in 3: a draw u picks member floor(u * count)
    slots = strategy.slots_of(torch.tensor([0, 0, 1, 2]), torch.tensor([0.0, 0.6, 0.5, 0.9]))
    assert slots.tolist() == [0, 2, 4, 3]


def test_the_feedback_replays_the_pair_of_classes_whose_prototypes_are_closest(small_data) -> None:
    strategy, model, _ = set_up(small_data, buffer_size=30, uniform_share=0.0, mixup_probability=0.0)
    strategy.memory.offer(torch.randn(30, 8), torch.arange(30) % 3, torch.zeros(30, dtype=torch.long))
    strategy.prototypes = torch.zeros(6, 16)
    strategy.prototypes[1, 0], strategy.prototypes[2, 0] = 0.01, 1.0  # 0 and 1 nearly coincide; 2 is far
    strategy.present = torch.tensor([True, True, True, False, False, False])
    drawn = []
    replay_slots = strategy.memory.replay_slots
    strategy.memory.replay_slots = lambda index: (drawn.append(index), replay_slots(index))[1]
    replay = strategy.memory.sample(10)
    strategy.mixed_replay(model, replay["x"], replay)
    labels = torch.arange(30) % 3
    assert [len(index) for index in drawn] == [10, 10]  # one sample of each class of 10 pairs
    assert set(labels[drawn[0]].tolist()) == {0} and set(labels[drawn[1]].tolist()) == {1}


def test_a_mixup_range_upside_down_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="strategy.mixup_min") as refused:
        OnPro(mixup_min=0.5, mixup_max=0.2)
    assert "\n" not in str(refused.value)


def test_onpro_resumes_after_sigkill_to_the_same_run(small_data, tmp_path) -> None:
    resumed_and_reference(class_incremental(small_data, 3), "onpro", tmp_path, {"onpro": {"buffer_size": 30}})


def test_online_on_digits_onpro_keeps_more_than_er_and_er_ace(digits_data) -> None:
    # measured: er 0.632, er_ace 0.682, onpro 0.783 (seed 0, memory 200)
    found = online_digits_accuracies(digits_data, {"er": ER(buffer_size=200), "er_ace": ERACE(buffer_size=200),
                                                   "onpro": OnPro(buffer_size=200)})
    assert found["onpro"] > 0.7 and found["onpro"] > max(found["er"], found["er_ace"]) + 0.05
