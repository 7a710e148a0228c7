"""End-to-end acceptance on real data (scikit-learn's handwritten digits), 3 seeds each:
the runner learns, naive fine-tuning forgets, replay and regularisation keep."""

import statistics

import pytest
import torch

from lifelong import OptimConfig, class_incremental, domain_incremental, mlp, task_incremental, train
from lifelong.strategies import ER, EWC, Joint, LwF, Naive

SEEDS = (0, 1, 2)
OPTIM = OptimConfig(epochs=5)  # SGD, lr 0.03, momentum 0.9, batch 16


def run(stream, make_strategy, seed, optim=OPTIM):
    torch.manual_seed(seed)
    return train(stream, mlp(stream.input_shape, stream.n_classes), make_strategy(), optim, seed=seed).metrics


@pytest.fixture(scope="module")
def class_il(digits_data):
    stream = class_incremental(digits_data, 5)
    return {name: [run(stream, make, s) for s in SEEDS]
            for name, make in (("joint", Joint), ("naive", Naive), ("er", lambda: ER(buffer_size=200)))}


def test_joint_is_the_upper_bound(class_il) -> None:
    assert all(m["final_accuracy"] >= 0.93 for m in class_il["joint"])


def test_naive_forgets(class_il) -> None:
    assert all(m["final_accuracy"] <= 0.35 for m in class_il["naive"])
    assert all(m["forgetting"] >= 0.7 for m in class_il["naive"])


def test_replay_keeps(class_il) -> None:
    assert all(m["final_accuracy"] >= 0.80 for m in class_il["er"])
    assert max(m["forgetting"] for m in class_il["er"]) < min(m["forgetting"] for m in class_il["naive"])


@pytest.mark.parametrize("scenario", ["task", "domain"])
def test_ewc_and_lwf_forget_less_than_naive(digits_data, scenario) -> None:
    # A permuted-digits experience holds all 1,347 training images (5x a class split), so 3 experiences
    # of 2 epochs keep the test short while the permutations still overwrite each other.
    if scenario == "task":
        stream, optim = task_incremental(digits_data, 5), OPTIM
    else:
        stream, optim = domain_incremental(digits_data, 3, transform="permutation"), OptimConfig(epochs=2)
    forgetting = {name: statistics.mean(run(stream, make, s, optim)["forgetting"] for s in SEEDS)
                  for name, make in (("naive", Naive), ("ewc", EWC), ("lwf", LwF))}
    assert forgetting["ewc"] < forgetting["naive"]
    assert forgetting["lwf"] < forgetting["naive"]
