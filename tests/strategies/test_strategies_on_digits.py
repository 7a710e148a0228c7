"""End-to-end: the new strategies on class-incremental digits (5 experiences of 2 classes), memory 200,
default OptimConfig, one seed. The 3-seed table is ``benchmarks/strategies.py`` (docs/results/digits.md)."""

import pytest
import torch

from lifelong import OptimConfig, class_incremental, mlp, task_incremental, train
from lifelong.strategies import AGEM, DER, ERACE, NCM, SLCA, DERpp, GDumb, ICaRL, Naive


def final_accuracy(stream, strategy, optim: OptimConfig | None = None) -> float:
    torch.manual_seed(0)
    model = mlp(stream.input_shape, stream.n_classes)
    return train(stream, model, strategy, optim or OptimConfig(), seed=0).metrics["final_accuracy"]


@pytest.fixture(scope="module")
def class_stream(digits_data):
    return class_incremental(digits_data, 5)


@pytest.fixture(scope="module")
def naive_class(class_stream) -> float:
    return final_accuracy(class_stream, Naive())


@pytest.mark.parametrize("make", [lambda: ERACE(buffer_size=200), lambda: DERpp(buffer_size=200),
                                  lambda: GDumb(buffer_size=200), lambda: ICaRL(buffer_size=200)],
                         ids=["er_ace", "derpp", "gdumb", "icarl"])
def test_strong_rehearsal_methods_keep_most_of_digits(make, class_stream, naive_class) -> None:
    accuracy = final_accuracy(class_stream, make())
    assert accuracy >= 0.75 and accuracy >= naive_class + 0.4


@pytest.mark.parametrize("make", [lambda: DER(buffer_size=200), lambda: NCM(adapt_experiences=2),
                                  lambda: SLCA(samples_per_class=64)],
                         ids=["der", "ncm", "slca"])
def test_methods_beat_fine_tuning_on_class_incremental_digits(make, class_stream, naive_class) -> None:
    assert final_accuracy(class_stream, make()) > naive_class + 0.1


def test_agem_beats_fine_tuning_in_both_scenarios(digits_data) -> None:
    tasks = task_incremental(digits_data, 5)
    assert final_accuracy(tasks, AGEM(buffer_size=200)) > final_accuracy(tasks, Naive()) + 0.005
    # class-incremental with the paper's plain SGD: momentum carries unprojected directions across steps
    plain = OptimConfig(momentum=0.0)
    classes = class_incremental(digits_data, 5)
    assert final_accuracy(classes, AGEM(buffer_size=200), plain) > final_accuracy(classes, Naive(), plain) + 0.1
