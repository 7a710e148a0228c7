"""PCR and HPCR: the loss of a step from the parts by hand, HPCR's factor and distillation, PCR as HPCR without
them, predictions among the classes trained so far, an exact resume after SIGKILL and online digits."""

from __future__ import annotations

import pytest
import torch

from lifelong import ER, ERACE, HPCR, PCR, OptimConfig, class_incremental, mlp, train
from lifelong.config import Component, build
from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.contrastive import cosine_logits, proxy_contrastive_loss
from tests.runner.test_checkpoint_resume import resumed_and_reference
from tests.strategies.online import online_digits_accuracies

"""One pass in batches of 10 (plus 10 replayed), SGD 0.1: the authors' online setting."""


def batches(stream, experience: int, size: int = 8) -> list[Batch]:
    train = stream[experience].train
    return [Batch(train.x[i:i + size], train.y[i:i + size], train.task[i:i + size])
            for i in range(0, len(train.y), size)]


def test_a_step_is_the_pcr_loss_of_the_new_and_the_replayed_samples(small_data) -> None:
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    strategy = PCR(buffer_size=50, temperature=0.2)
    strategy.setup(StrategyContext(stream))
    strategy.before_experience(model, stream[0])
    first, second = batches(stream, 0)[:2]

    def by_hand(x: torch.Tensor, y: torch.Tensor) -> float:
        return proxy_contrastive_loss(cosine_logits(model.backbone(x), model.head, 1 / 0.2), y).item()

    assert strategy.observe(model, first).item() == pytest.approx(by_hand(first.x, first.y))  # memory empty
    # the memory holds the first batch and replays all of it (in its own order, which the loss ignores)
    expected = by_hand(torch.cat([second.x, first.x]), torch.cat([second.y, first.y]))
    assert strategy.observe(model, second).item() == pytest.approx(expected, rel=1e-6)


def test_hpcr_scales_its_loss_along_a_cosine_over_each_period() -> None:
    strategy = HPCR(gradient_scale_period=4)
    scales = []
    for step in range(5):
        strategy.step = step
        scales.append(strategy.gradient_scale())
    middle = 0.5625 + (1.8 - 0.5625) / 2
    assert scales == pytest.approx([0.5625, middle, 1.8, middle, 0.5625])
    with pytest.raises(ConfigError, match="strategy.gradient_scale_min") as refused:
        HPCR(gradient_scale_min=2.0)
    assert "\n" not in str(refused.value)


def test_hpcr_distils_nothing_until_the_model_moves_from_where_the_samples_left_it(small_data) -> None:
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    strategy = HPCR(buffer_size=50, similarity_distillation=0.0)
    strategy.setup(StrategyContext(stream))
    strategy.before_experience(model, stream[0])
    strategy.observe(model, batches(stream, 0)[0])
    strategy.after_experience(model, stream[0])
    replay = strategy.memory.sample(8)
    assert set(replay) == {"x", "y", "task", "logits"}  # no features kept without their distillation

    def distillation() -> float:
        features = model.backbone(replay["x"])
        logits = cosine_logits(features, model.head, 1 / strategy.temperature)
        return strategy.distillation(features, logits, replay["y"], replay).item()

    assert distillation() == 0.0
    with torch.no_grad():
        model.head.weight.add_(0.1 * torch.randn_like(model.head.weight))
    assert distillation() > 0.0


def test_pcr_is_hpcr_without_its_factor_and_distillation_and_does_not_expose_them(small_data) -> None:
    with pytest.raises(ConfigError, match="strategy.logit_distillation: unknown field for strategy 'pcr'"):
        build("strategy", STRATEGIES, Component(name="pcr", logit_distillation=0.1))
    matrices = []
    for strategy in (PCR(buffer_size=30), HPCR(buffer_size=30, gradient_scale_min=1.0, gradient_scale_max=1.0,
                                               logit_distillation=0.0, similarity_distillation=0.0)):
        stream = class_incremental(small_data, 3)
        result = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0), strategy,
                       OptimConfig(epochs=1), seed=0)
        matrices.append(torch.as_tensor(result.matrix))
    assert torch.equal(matrices[0], matrices[1])


def test_pcr_predicts_only_the_classes_trained_so_far(small_data) -> None:
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    strategy = PCR()
    strategy.setup(StrategyContext(stream))
    strategy.before_experience(model, stream[0])
    test = small_data.x_test
    predicted = strategy.predict(model, test, torch.zeros(len(test), dtype=torch.long))
    assert set(predicted.tolist()) <= set(stream[0].classes)  # the untrained proxies point anywhere


def test_hpcr_resumes_after_sigkill_to_the_same_run(small_data, tmp_path) -> None:
    resumed_and_reference(class_incremental(small_data, 3), "hpcr", tmp_path,
                          {"hpcr": {"buffer_size": 30, "gradient_scale_period": 5}})


@pytest.fixture(scope="module")
def online_digits(digits_data) -> dict[str, float]:
    """Final accuracy of online class-incremental digits (5 x 2 classes) with a memory of 200, seed 0."""
    return online_digits_accuracies(digits_data, {"er": ER(buffer_size=200), "er_ace": ERACE(buffer_size=200),
                                                  "pcr": PCR(buffer_size=200), "hpcr": HPCR(buffer_size=200)})


@pytest.mark.parametrize("name", ["pcr", "hpcr"])
def test_online_on_digits_proxy_contrastive_replay_keeps_more_than_er_and_er_ace(online_digits, name) -> None:
    # measured: er 0.632, er_ace 0.682, pcr 0.900, hpcr 0.897; ER-ACE forgets little but learns each new pair
    # of classes poorly, ER the reverse; the contrast with in-batch proxies does both
    accuracy = online_digits[name]
    assert accuracy > 0.8 and accuracy > max(online_digits["er"], online_digits["er_ace"]) + 0.1
